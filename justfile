# mirror-baton's everyday commands.
#
# Get `just` with `cargo install just` (or `brew install just` on a Mac). Nothing here
# needs it: every recipe is one plain cargo command, written in the comment above it.
# `just --list` shows the recipes.

set positional-arguments

# Show the recipes.
default:
    @just --list

# The whole story on this machine, no Telegram account or iCloud needed (< 1 minute).
# Plain cargo: cargo run --locked -- demo [--speed F] [--keep DIR] [--seed N]
demo *args:
    cargo run --locked --quiet -- demo "$@"

# The test suite, as CI runs it.
# Plain cargo: cargo test --locked
test:
    cargo test --locked

# Type-check and lint the macOS code paths from Linux (no SDK needed; nothing is linked).
# Plain: scripts/check-macos
check-macos:
    scripts/check-macos

# Install `baton` into ~/.cargo/bin.
# Plain cargo: cargo install --path . --locked
install:
    cargo install --path . --locked

# Coordinate for a project directory (default: where you are), running CMD in it.
# Plain cargo: cargo run --locked -- run [DIR] [-- CMD…]
run *args:
    #!/usr/bin/env sh
    set -eu
    cd "{{invocation_directory()}}"
    dir=.
    if [ $# -gt 0 ] && [ "$1" != "--" ]; then dir=$1; shift; fi
    if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; fi
    if [ $# -gt 0 ]; then set -- -- "$@"; fi
    exec cargo run --locked --quiet --manifest-path "{{justfile_directory()}}/Cargo.toml" -- run "$dir" "$@"

# Install baton, then a launchd agent (systemd user unit on Linux) for DIR running CMD.
# Plain cargo: cargo install --path . --locked && baton agent install DIR [-- CMD…]
agent dir *cmd: install
    #!/usr/bin/env sh
    set -eu
    cd "{{invocation_directory()}}"
    dir=$1; shift
    if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; fi
    if [ $# -gt 0 ]; then set -- -- "$@"; fi
    exec baton agent install "$dir" "$@"
