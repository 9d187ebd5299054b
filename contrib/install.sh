#!/bin/sh
# Installs wdsync: the release binary, man pages, shell completions and systemd user units.
#
#   contrib/install.sh [--prefix DIR] [--binary FILE]
#
# DIR defaults to ~/.local, which needs no root. --binary installs an already built wdsync
# instead of building the release binary (packagers; the install test).
set -eu

usage() {
    echo "usage: contrib/install.sh [--prefix DIR] [--binary FILE]" >&2
    exit 64
}

prefix="$HOME/.local"
binary=""
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --binary) [ $# -ge 2 ] || usage; binary=$2; shift 2 ;;
        --binary=*) binary=${1#--binary=}; shift ;;
        -h|--help) usage ;;
        *) echo "install.sh: unknown argument $1" >&2; usage ;;
    esac
done

cd "$(dirname "$0")/.."
case $prefix in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac

if [ -z "$binary" ]; then
    PATH="/opt/swift/usr/bin:$PATH"
    # The Swift runtime and Foundation are linked in: the installed binary does not depend on
    # the toolchain staying where it is, and starts in half the time. (The linker's warning
    # about mktemp comes from Foundation's archive; wdsync does not call it.)
    swift build -c release --product wdsync --static-swift-stdlib
    binary="$(swift build -c release --show-bin-path)/wdsync"
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 66; }

bin="$prefix/bin"
man1="$prefix/share/man/man1"
man5="$prefix/share/man/man5"
bash_dir="$prefix/share/bash-completion/completions"
zsh_dir="$prefix/share/zsh/site-functions"
fish_dir="$prefix/share/fish/vendor_completions.d"
units="$prefix/share/systemd/user"     # searched by `systemctl --user` for ~/.local and /usr/local
install -d -m 755 "$bin" "$man1" "$man5" "$bash_dir" "$zsh_dir" "$fish_dir" "$units"

install -m 755 "$binary" "$bin/wdsync.new"
mv -f "$bin/wdsync.new" "$bin/wdsync"     # a running daemon keeps its old binary
install -m 644 contrib/man/wdsync.1 "$man1/wdsync.1"
install -m 644 contrib/man/wdsync.conf.5 "$man5/wdsync.conf.5"
"$bin/wdsync" --completions bash > "$bash_dir/wdsync"
"$bin/wdsync" --completions zsh > "$zsh_dir/_wdsync"
"$bin/wdsync" --completions fish > "$fish_dir/wdsync.fish"
chmod 644 "$bash_dir/wdsync" "$zsh_dir/_wdsync" "$fish_dir/wdsync.fish"

# The units run the installed binary: `%` is systemd's specifier character, quotes allow spaces.
exec_path=$(printf '%s' "$bin/wdsync" | sed -e 's/%/%%/g' -e 's/[\\&|]/\\&/g')
for unit in wdsync.service wdsync-once.service wdsync-once.timer; do
    sed -e "s|^ExecStart=%h/.local/bin/wdsync|ExecStart=\"$exec_path\"|" "contrib/systemd/$unit" > "$units/$unit.new"
    chmod 644 "$units/$unit.new"
    mv -f "$units/$unit.new" "$units/$unit"
done

echo "installed $("$bin/wdsync" --version) in $bin, man pages, completions and systemd units under $prefix/share"
case ":$PATH:" in *":$bin:"*) ;; *) echo "note: $bin is not in your PATH" ;; esac
echo "zsh: add $zsh_dir to fpath (before compinit) if it is not there yet"
echo "then choose one (not both, they sync the same accounts):"
echo "  live sync:            systemctl --user daemon-reload && systemctl --user enable --now wdsync"
echo "  or every 15 minutes:  systemctl --user daemon-reload && systemctl --user enable --now wdsync-once.timer"
