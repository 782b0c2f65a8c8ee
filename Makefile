# voicegw — the commands in README.md. Each installs what it needs on a fresh Debian/Ubuntu machine.

CARGO ?= cargo

.PHONY: deps run test bench fmt lint fuzz fixtures

# System packages the build needs (a C compiler for webrtc-vad's bundled libfvad).
deps:
	@command -v cc >/dev/null 2>&1 && command -v pkg-config >/dev/null 2>&1 || { \
		echo "installing build-essential pkg-config"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq build-essential pkg-config; }

run: deps
	$(CARGO) run --release -- serve

# Benches run once each in test mode (a broken bench fails the suite), then doc tests, then the
# unit and integration tests.
test: deps
	$(CARGO) test --bench '*'
	$(CARGO) test --doc
	$(CARGO) test --lib --bins --tests --no-fail-fast

bench: deps
	$(CARGO) bench

fmt:
	$(CARGO) fmt --all

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fixtures:
	bash fixtures/audio/generate.sh
