#!/usr/bin/env bash
# Builds relay-sync's .deb and .rpm from a built binary:
#   packaging/build-packages.sh BINARY OUT_DIR VERSION
# FAST=1 compresses lightly (the test's debug binary is large; release builds use the defaults).
# Used by `cargo xtask dist` (release binary) and by the end-to-end test (debug binary), so the
# package that is tested is laid out by the same code as the one shipped.
# Needs dpkg-deb (dpkg) and rpmbuild (apt-get install rpm).
set -euo pipefail
bin=$(realpath "$1"); out=$(realpath -m "$2"); version=$3
here=$(cd "$(dirname "$0")" && pwd)
for tool in dpkg-deb rpmbuild; do
  command -v "$tool" >/dev/null || { echo "build-packages: $tool not found: apt-get install -y ${tool/rpmbuild/rpm}" >&2; exit 1; }
done
command -v strip >/dev/null || { echo "build-packages: strip not found: apt-get install -y binutils" >&2; exit 1; }
if [ "${FAST:-0}" = 1 ]; then deb_level=-z1; rpm_payload=w1.gzdio; else deb_level=-z9; rpm_payload=w9.gzdio; fi
mkdir -p "$out"
work=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
umask 022

# The tree both packages install: the document's paths and modes.
install -D -m 0755 "$bin" "$root/usr/bin/relay-sync"
# Debug information stays out of the package (a debug build carries ~80 MB of it).
strip --strip-debug "$root/usr/bin/relay-sync"
install -d -m 0755 "$root/opt/mailserver" "$root/opt/mailserver/config"
install -D -m 0600 "$here/relay-sync.conf" "$root/opt/mailserver/config/relay-sync.conf"
install -d -m 0700 "$root/opt/mailserver/backup"
install -d -m 0750 "$root/var/log/mailserver"
install -d -m 0700 "$root/var/lib/relay-sync"
install -D -m 0644 "$here/relay-sync.logrotate" "$root/etc/logrotate.d/relay-sync"
install -D -m 0644 "$here/relay-sync.service" "$root/usr/lib/systemd/system/relay-sync.service"
install -D -m 0644 "$here/relay-sync.timer" "$root/usr/lib/systemd/system/relay-sync.timer"
install -D -m 0644 "$here/relay-sync.cron" "$root/usr/share/relay-sync/relay-sync.cron"
install -D -m 0644 "$here/create-user.sql" "$root/usr/share/relay-sync/create-user.sql"
# Man page and completions, generated from the binary's own clap definition.
install -d -m 0755 "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
  "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
"$bin" man | gzip -n -9 > "$root/usr/share/man/man1/relay-sync.1.gz"
for command in sync check status rollback backups; do
  "$bin" man "$command" | gzip -n -9 > "$root/usr/share/man/man1/relay-sync-$command.1.gz"
done
"$bin" completions bash > "$root/usr/share/bash-completion/completions/relay-sync"
"$bin" completions zsh > "$root/usr/share/zsh/vendor-completions/_relay-sync"
"$bin" completions fish > "$root/usr/share/fish/vendor_completions.d/relay-sync.fish"
chmod 0644 "$root"/usr/share/man/man1/* "$root"/usr/share/*/completions/* \
  "$root"/usr/share/zsh/vendor-completions/* "$root"/usr/share/fish/vendor_completions.d/*

# .deb
deb_arch=$(dpkg --print-architecture)
debroot=$work/deb
cp -a "$root" "$debroot"
install -d -m 0755 "$debroot/DEBIAN"
cat > "$debroot/DEBIAN/control" <<CONTROL
Package: relay-sync
Version: $version
Architecture: $deb_arch
Maintainer: relay-sync maintainers <root@localhost>
Depends: libc6
Recommends: postfix
Section: mail
Priority: optional
Description: keep Postfix relay_domains and transport in step with MariaDB
 Reads the enabled domains of a mail admin panel's MariaDB and updates a Postfix MX
 gateway's relay_domains and transport map, with backups, a safety guard and rollback.
CONTROL
printf '%s\n' /opt/mailserver/config/relay-sync.conf /etc/logrotate.d/relay-sync > "$debroot/DEBIAN/conffiles"
deb=$out/relay-sync_${version}_${deb_arch}.deb
dpkg-deb --root-owner-group -Zgzip "$deb_level" --build "$debroot" "$deb" >/dev/null

# .rpm: the same tree, packaged by rpmbuild from the staged files (no compilation).
rpm_arch=$(uname -m)
top=$work/rpmbuild
mkdir -p "$top"/{BUILD,RPMS,SOURCES,SPECS,SRPMS,BUILDROOT}
rpm_version=${version//-/_}
cat > "$top/SPECS/relay-sync.spec" <<SPEC
Name: relay-sync
Version: $rpm_version
Release: 1
Summary: Keep Postfix relay_domains and transport in step with MariaDB
License: MIT OR Apache-2.0
BuildArch: $rpm_arch
AutoReqProv: no
Requires: glibc
%global debug_package %{nil}
%global __os_install_post %{nil}
%description
Reads the enabled domains of a mail admin panel's MariaDB and updates a Postfix MX gateway's
relay_domains and transport map, with backups, a safety guard and rollback.
%install
cp -a "$root"/. %{buildroot}/
%files
%attr(0755,root,root) /usr/bin/relay-sync
%dir %attr(0755,root,root) /opt/mailserver/config
%config(noreplace) %attr(0600,root,root) /opt/mailserver/config/relay-sync.conf
%dir %attr(0700,root,root) /opt/mailserver/backup
%dir %attr(0750,root,root) /var/log/mailserver
%dir %attr(0700,root,root) /var/lib/relay-sync
%config(noreplace) %attr(0644,root,root) /etc/logrotate.d/relay-sync
%attr(0644,root,root) /usr/lib/systemd/system/relay-sync.service
%attr(0644,root,root) /usr/lib/systemd/system/relay-sync.timer
%dir %attr(0755,root,root) /usr/share/relay-sync
%attr(0644,root,root) /usr/share/relay-sync/relay-sync.cron
%attr(0644,root,root) /usr/share/relay-sync/create-user.sql
%attr(0644,root,root) /usr/share/man/man1/relay-sync.1.gz
%attr(0644,root,root) /usr/share/man/man1/relay-sync-sync.1.gz
%attr(0644,root,root) /usr/share/man/man1/relay-sync-check.1.gz
%attr(0644,root,root) /usr/share/man/man1/relay-sync-status.1.gz
%attr(0644,root,root) /usr/share/man/man1/relay-sync-rollback.1.gz
%attr(0644,root,root) /usr/share/man/man1/relay-sync-backups.1.gz
%attr(0644,root,root) /usr/share/bash-completion/completions/relay-sync
%attr(0644,root,root) /usr/share/zsh/vendor-completions/_relay-sync
%attr(0644,root,root) /usr/share/fish/vendor_completions.d/relay-sync.fish
SPEC
rpmbuild --quiet -bb --nodeps --define "_topdir $top" --define "_build_id_links none" \
  --define "_binary_payload $rpm_payload" \
  "$top/SPECS/relay-sync.spec" >/dev/null
rpm=$out/relay-sync-${rpm_version}-1.${rpm_arch}.rpm
mv "$top/RPMS/$rpm_arch/"*.rpm "$rpm"
echo "$deb"
echo "$rpm"
