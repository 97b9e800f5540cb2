# cmesh-run: see README.md. Every target works on a fresh Debian machine as root.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
PREFIX  ?= /usr/local
DESTDIR ?=
GO      ?= go
LDFLAGS := -s -w -X github.com/cmesh/cmesh-run/run.Version=$(VERSION)

.PHONY: build man demo test unit integration bench install clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags urfave_cli_no_docs -ldflags "$(LDFLAGS)" -o cmesh-run .

# The man page is generated from the binary; the tests fail when the
# committed one is stale.
man: build
	./cmesh-run _man > man/cmesh-run.1

demo: build
	bash scripts/demo.sh

test:
	bash scripts/test.sh

unit:
	$(GO) test -race -count=1 ./...

bench: build
	bash scripts/bench.sh

install: build
	install -D -m 0755 cmesh-run $(DESTDIR)$(PREFIX)/bin/cmesh-run
	install -D -m 0644 man/cmesh-run.1 $(DESTDIR)$(PREFIX)/share/man/man1/cmesh-run.1
	install -D -m 0644 completions/cmesh-run.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/cmesh-run
	install -D -m 0644 completions/_cmesh-run $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_cmesh-run

clean:
	rm -f cmesh-run
