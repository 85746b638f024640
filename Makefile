# pixelhouse — the two commands a fresh machine needs:
#   make run    install, migrate, seed demo data, start sandbox + web + worker + beat
#   make test   run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)

WEB_PORT     ?= 8000
SANDBOX_PORT ?= 8765
STRIPE_SANDBOX_PORT ?= 8420
export SANDBOX_PORT WEB_PORT STRIPE_SANDBOX_PORT

.PHONY: install run test screenshots check lint typecheck bench drill clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: export PYMTHOUSE_URL ?= http://127.0.0.1:$(SANDBOX_PORT)
run: export LIVEPEER_ALLOW_PRIVATE_ADDRESSES ?= true
# Card payments on localstripe (sandbox/stripe.py): test keys only, never real ones.
run: export STRIPE_SECRET_KEY ?= sk_test_pixelhouse_local
run: export STRIPE_PUBLISHABLE_KEY ?= pk_test_pixelhouse_local
run: export STRIPE_WEBHOOK_SECRET ?= whsec_pixelhouse_local
run: export STRIPE_API_BASE ?= http://127.0.0.1:$(STRIPE_SANDBOX_PORT)
run: export STRIPE_JS_URL ?= http://127.0.0.1:$(STRIPE_SANDBOX_PORT)/js.stripe.com/v3/
run: export STRIPE_WEBHOOK_URL ?= http://127.0.0.1:$(WEB_PORT)/billing/stripe/webhook/
run: install
	@mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable
	$(BIN)/python manage.py seed_demo
	@echo ""
	@echo "  web      http://127.0.0.1:$(WEB_PORT)/          (admin: /admin/)"
	@echo "  sandbox  http://127.0.0.1:$(SANDBOX_PORT)/      (stands in for pymthouse + Livepeer)"
	@echo "  stripe   http://127.0.0.1:$(STRIPE_SANDBOX_PORT)/      (localstripe; test card 4242 4242 4242 4242)"
	@echo "  logins   admin@example.com (staff), alice@example.com, bob@example.com — password pixelhouse-demo"
	@echo "  SSO      'Continue with pymthouse (sandbox)' on the sign-in page (ada@, grace@ … sandbox.pymthouse.test)"
	@echo ""
	$(BIN)/honcho start -f Procfile

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

# The pages at 390 and 1280 px, checked and saved in docs/screenshots/ (needs Chromium).
screenshots: install
	LAYOUT_SCREENSHOTS=docs/screenshots $(BIN)/pytest tests/browser/test_layout.py -q

check: lint typecheck
	$(BIN)/python manage.py makemigrations --check --dry-run
	DJANGO_DEBUG=false DJANGO_SECRET_KEY=check-only-$$(date +%s)-not-a-secret-0123456789abcdefghijklmnop \
	  PYMTHOUSE_URL=https://pymthouse.example PYMTHOUSE_PUBLIC_CLIENT_ID=app_b50c8e3d43c6d3641cae2e66 \
	  PYMTHOUSE_M2M_CLIENT_ID=m2m_b50c8e3d43c6d3641cae2e66 PYMTHOUSE_M2M_CLIENT_SECRET=pmth_cs_check \
	  DJANGO_ALLOWED_HOSTS=app.example $(BIN)/python manage.py check --deploy --fail-level WARNING

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy .

bench: install
	$(BIN)/python -m bench

# Fault drill on Postgres + its own Redis (docs/reliability.md); DRILL_ARGS=--quick for a small run.
DRILL_ARGS ?= --write docs/reliability.md
drill: install
	$(BIN)/python -m bench.drill $(DRILL_ARGS)

clean:
	rm -rf var/test var/celery
