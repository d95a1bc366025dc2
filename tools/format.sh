#!/bin/sh
# format.sh - formats every C file with the repository's .clang-format;
# with --check, changes nothing and fails if any file would change.
cd "$(dirname "$0")/.." || exit 1
files=$(git ls-files '*.c' '*.h')
[ -n "$files" ] || exit 0
if [ "$1" = "--check" ]; then
	exec clang-format --dry-run -Werror $files
fi
exec clang-format -i $files
