"""Browser single sign-on: allauth's openid_connect provider with the checks it lacks.

allauth 65 leaves several OIDC relying-party checks to the deployer: it does not send a
``nonce``, enables PKCE only if told, trusts the discovery document's ``issuer`` as given,
fetches userinfo (which pymthouse refuses for its own access tokens, see
docs/identity.md) and skips the ID token signature when the token came straight
from the token endpoint. :class:`provider.HardenedOpenIDConnectProvider` (selected through
``SOCIALACCOUNT_PROVIDERS["openid_connect"]["provider_class"]``) and the views here add
them; the verification itself is :func:`integrations.oidc.verify_jwt`.
"""
