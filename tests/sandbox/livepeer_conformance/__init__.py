"""The sandbox's Livepeer surface, pinned rule by rule to go-livepeer 176aa415.

Every test names the upstream code it mirrors (GL = livepeer/go-livepeer @
176aa415ccea4f9861e0dd44e981cda17fb36f52). All calls are real HTTP
against a sandbox process; a test asserts the exact status and body, and what must NOT
have happened (no usage event, no app run), so the sandbox cannot drift back to being
more lenient than the real orchestrator and signer.
"""
