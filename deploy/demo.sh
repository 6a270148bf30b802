#!/usr/bin/env bash
# Serve the two-vhost demo from this folder on 127.0.0.1:8080 (alice.test, bob.test).
# As root: multiplexers run as uid 2000, alice's processors as 2001, bob's as 2002.
# As a normal user: everything runs as that user and bulkhead warns that isolation is off.
# Try:  curl -H 'Host: alice.test' http://127.0.0.1:8080/   (Ctrl-C stops it)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cargo build --release --manifest-path "$repo/Cargo.toml" --bin bulkhead
work=${BULKHEAD_DEMO_DIR:-$(mktemp -d /tmp/bulkhead-demo.XXXXXX)}
mkdir -p "$work"
chmod 0755 "$work"
for site in alice bob; do
  mkdir -p "$work/$site/www"
  cp -r "$here/demo-www/$site/." "$work/$site/www/"
done
if [ "$(id -u)" = 0 ]; then
  chown -R 2001:2001 "$work/alice"
  # bob's chroot stays root's (check refuses a chroot its tenant could swap); its site is bob's.
  chown -R 2002:2002 "$work/bob/www"
fi
mkdir -p "$work/run"
sed -e "s#@WORK@#$work#g" -e "s#@LISTEN@#${BULKHEAD_DEMO_LISTEN:-127.0.0.1:8080}#g" \
  "$here/demo.toml.in" > "$work/bulkhead.toml"
# PHP for alice when Debian's php-cgi is installed: curl -H 'Host: alice.test' .../whoami.php
if [ -x /usr/bin/php-cgi ]; then
  echo '<?php echo "alice runs PHP as uid ", posix_geteuid(), "\n";' > "$work/alice/www/whoami.php"
  if [ "$(id -u)" = 0 ]; then chown 2001:2001 "$work/alice/www/whoami.php"; fi
  printf '\n[environments.alice.fastcgi]\ncommand = ["/usr/bin/php-cgi"]\nextensions = [".php"]\n' >> "$work/bulkhead.toml"
fi
echo "demo config: $work/bulkhead.toml"
"$repo/target/release/bulkhead" check --config "$work/bulkhead.toml"
exec "$repo/target/release/bulkhead" serve --config "$work/bulkhead.toml"
