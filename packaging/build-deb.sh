#!/usr/bin/env bash
# Builds the Debian package warren_<version>_all.deb with dpkg-deb (no debhelper: the tree is
# small and every file in it is listed here).
#   packaging/build-deb.sh LIB_DIR MAVEN_VERSION OUT_DIR
# LIB_DIR holds every runtime jar (dist/pom.xml copies them there); the rest comes from the
# checkout this script lives in: the launcher, systemd/units, packaging/debian, LICENSE, README.
set -euo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 LIB_DIR MAVEN_VERSION OUT_DIR" >&2; exit 2; }
LIBSRC=$(cd "$1" && pwd); MVNVER=$2; OUT=$(mkdir -p "$3" && cd "$3" && pwd)
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
# Debian ordering: 0.1.0-SNAPSHOT comes before 0.1.0 ("~"), and a "-" would be a Debian revision
VERSION=${MVNVER//-/\~}
TREE="$OUT/deb"
rm -rf "$TREE"
install -d -m 0755 "$TREE/DEBIAN" "$TREE/usr/lib/warren" "$TREE/usr/bin" "$TREE/lib/systemd/system" \
  "$TREE/etc/warren" "$TREE/usr/lib/tmpfiles.d" "$TREE/usr/share/doc/warren"

# the jars, one flat directory (the launcher runs java -cp '/usr/lib/warren/*')
for j in "$LIBSRC"/*.jar; do
  case "$(basename "$j")" in *-tests.jar) continue ;; esac
  install -m 0644 "$j" "$TREE/usr/lib/warren/"
done
# one version of each artifact: two would mean two copies of its classes on one class path
dups=$(ls "$TREE/usr/lib/warren" | sed -E 's/-[0-9][^-]*(-SNAPSHOT)?\.jar$//' | sort | uniq -d)
[[ -z "$dups" ]] || { echo "build-deb: more than one version of: $dups" >&2; exit 1; }
install -m 0755 "$ROOT/warren" "$TREE/usr/bin/warren"
install -m 0644 "$ROOT"/systemd/units/warren-*.service "$ROOT"/systemd/units/warren-*.socket "$TREE/lib/systemd/system/"
install -m 0644 "$ROOT/packaging/debian/tmpfiles.conf" "$TREE/usr/lib/tmpfiles.d/warren.conf"
install -m 0644 "$ROOT/README.md" "$TREE/usr/share/doc/warren/README.md"
{ echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: warren"
  echo
  echo "Files: *"
  echo "License: Apache-2.0"
  echo " On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0."
} > "$TREE/usr/share/doc/warren/copyright"

# /etc/warren/<daemon>.conf: what --print-config prints for an empty config (every key, its
# default and its meaning), each key line commented out, so the file changes nothing until edited
for d in splicer bumblebee fish; do
  main="warren.$d.Main"
  { echo "# /etc/warren/$d.conf: the $d daemon's configuration (warren $MVNVER)."
    echo "# Every key with its default, commented out; uncomment and edit a line to change it."
    echo "# The unit reads this file at start and on every upgrade in place (systemctl reload)."
    echo "#"
    java -cp "$TREE/usr/lib/warren/*" "$main" --print-config </dev/null | sed -E 's/^([^#[:space:]])/# \1/'
  } > "$TREE/etc/warren/$d.conf"
  chmod 0644 "$TREE/etc/warren/$d.conf"
  grep -q '^# [a-z]' "$TREE/etc/warren/$d.conf" || { echo "build-deb: no keys in $d.conf" >&2; exit 1; }
done

# usr/lib/warren/warren.classlist: the classes a daemon loads from its start to the end of its
# background warm-up (Splicer's, which runs the control server, handoff, relay and native code
# the three daemons share), for the postinst to dump a class-data sharing archive from
# (/var/lib/warren/warren.jsa, docs/operations.md): a restart after kill -9 then maps those
# classes instead of parsing and verifying them. The training daemon serves on a socket in a
# private directory and is stopped with SIGTERM; no archive is made here, since it must match
# the installed JVM.
train=$(mktemp -d "$OUT/cds-train.XXXXXX")
java -Djava.io.tmpdir="$train" -Dwarren.debug=true -XX:DumpLoadedClassList="$train/classes.lst" \
  -XX:+UseSerialGC -Xmn16m -cp "$TREE/usr/lib/warren/*" warren.splicer.Main --control "$train/s.sock" \
  </dev/null >"$train/log" 2>&1 &
tpid=$!
for _ in $(seq 1 600); do
  grep -q "warm-up" "$train/log" && break
  kill -0 "$tpid" 2>/dev/null || break
  sleep 0.1
done
kill -TERM "$tpid" 2>/dev/null || true
wait "$tpid" || true
grep -q "warm-up: a throwaway" "$train/log" \
  || { echo "build-deb: the class-list training run did not finish its warm-up:" >&2; cat "$train/log" >&2; exit 1; }
install -m 0644 "$train/classes.lst" "$TREE/usr/lib/warren/warren.classlist"
[[ $(wc -l < "$TREE/usr/lib/warren/warren.classlist") -gt 1000 ]] || { echo "build-deb: class list too short" >&2; exit 1; }
rm -rf "$train"

sed -e "s/@VERSION@/$VERSION/" -e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$TREE" | cut -f1)/" \
  "$ROOT/packaging/debian/control" > "$TREE/DEBIAN/control"
for f in postinst prerm postrm; do install -m 0755 "$ROOT/packaging/debian/$f" "$TREE/DEBIAN/$f"; done
(cd "$TREE" && find etc -type f | sed 's#^#/#' | sort) > "$TREE/DEBIAN/conffiles"
(cd "$TREE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$TREE/DEBIAN/md5sums"

rm -f "$OUT"/warren_*_all.deb
DEB="$OUT/warren_${VERSION}_all.deb"
dpkg-deb --root-owner-group -Zxz --build "$TREE" "$DEB" >/dev/null
echo "$DEB"
