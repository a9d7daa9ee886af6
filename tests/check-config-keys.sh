#!/bin/bash
#
# check-config-keys.sh: every key src/config.c accepts is documented in
# fanoutd.ini(5), and every key documented there is accepted; the man pages
# pass "mandoc -Tlint". Exit 0 when all is well, 1 otherwise.
#
# The keys of the code are the lines of config_keys[] that start with
#	{ "SECTION", "KEY",
# those of the man page the ".It Cm KEY" items of the outermost list under
# each ".Ss The [SECTION ...] section".

set -u

srcdir=${FANOUTD_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
code=$srcdir/src/config.c
page=$srcdir/man/fanoutd.ini.5
failed=0

for f in "$code" "$page"; do
	if [ ! -r "$f" ]; then
		echo "check-config-keys: cannot read $f" >&2
		exit 1
	fi
done

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

sed -n -E 's/^[[:space:]]*\{ "(server|admin|upstream|route)", "([a-z0-9_]+)",.*/\1.\2/p' \
    "$code" | sort >"$tmp/code"

awk '
/^\.Sh/	{ section = ""; depth = 0; next }
/^\.Ss/	{
	section = ""
	depth = 0
	if (match($0, /\[(server|admin|upstream|route)/))
		section = substr($0, RSTART + 1, RLENGTH - 1)
	next
}
section == ""	{ next }
/^\.Bl/	{ depth++; next }
/^\.El/	{ depth--; next }
depth == 1 && /^\.It Cm [a-z0-9_]+/	{ print section "." $3 }
' "$page" | sort >"$tmp/page"

if [ ! -s "$tmp/code" ]; then
	echo "check-config-keys: no keys found in $code" >&2
	failed=1
fi
if [ ! -s "$tmp/page" ]; then
	echo "check-config-keys: no keys found in $page" >&2
	failed=1
fi
for f in code page; do
	dups=$(uniq -d "$tmp/$f")
	if [ -n "$dups" ]; then
		echo "check-config-keys: listed twice in the $f:" $dups >&2
		failed=1
	fi
done

undocumented=$(comm -23 "$tmp/code" "$tmp/page")
unknown=$(comm -13 "$tmp/code" "$tmp/page")
if [ -n "$undocumented" ]; then
	echo "check-config-keys: accepted by src/config.c but not in" \
	    "fanoutd.ini(5):" >&2
	echo "$undocumented" | sed 's/^/	/' >&2
	failed=1
fi
if [ -n "$unknown" ]; then
	echo "check-config-keys: in fanoutd.ini(5) but not accepted by" \
	    "src/config.c:" >&2
	echo "$unknown" | sed 's/^/	/' >&2
	failed=1
fi
if [ "$failed" = 0 ]; then
	echo "check-config-keys: $(wc -l <"$tmp/code") keys, code and" \
	    "fanoutd.ini(5) agree"
fi

# mandoc 1.14 looks Xr targets up in /usr/share/man only: the project's own
# pages cannot be found there before "make install", so those are let go.
if command -v mandoc >/dev/null 2>&1; then
	pages=
	for p in "$srcdir"/man/*.5 "$srcdir"/man/*.8; do
		[ -e "$p" ] || continue		# no page of that section
		if [ ! -s "$p" ]; then
			echo "check-config-keys: $p is empty" >&2
			failed=1
			continue
		fi
		pages="$pages $p"
	done
	if [ -n "$pages" ]; then
		# shellcheck disable=SC2086
		lint=$(mandoc -Tlint $pages 2>&1 | grep -v -E \
		    'referenced manual not found: Xr (fanoutd 8|fanoutd\.ini 5)( |$)')
		if [ -n "$lint" ]; then
			echo "check-config-keys: mandoc -Tlint:" >&2
			echo "$lint" >&2
			failed=1
		else
			echo "check-config-keys: mandoc -Tlint clean:$pages"
		fi
	fi
else
	echo "check-config-keys: mandoc not found, man pages not linted"
fi

exit "$failed"
