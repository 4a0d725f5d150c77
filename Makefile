.PHONY: dev test bench
dev:
	./scripts/dev.sh
test:
	./scripts/test.sh
