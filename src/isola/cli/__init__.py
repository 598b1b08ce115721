"""The `isola` command line: one click group per noun, tables by rich, `--json` for scripts."""
