#!/usr/bin/env bash
# Builds relay-sync's .deb and .rpm from a built binary:
#   packaging/build-packages.sh BINARY OUT_DIR VERSION
# FAST=1 compresses lightly (the test's debug binary is large; release builds use the defaults).
# Used by `cargo xtask dist` (release binary) and by the end-to-end test (debug binary), so the
# package that is tested is laid out by the same code as the one shipped.
#
# What debhelper would produce, without a debian/ source tree: maintainer scripts (deb/, the
# dh_installsystemd --no-enable snippets plus purge), the libc dependency computed by
# dpkg-shlibdeps (the RPM's by rpmbuild's ELF dependency generator), md5sums, a DEP-5 copyright
# file, a changelog, lintian overrides. The RPM uses %systemd_post/%systemd_preun/
# %systemd_postun/%systemd_postun_with_restart (defined here when the build host has no
# systemd-rpm-macros, as on Debian). An upgrade try-restarts relay-sync-watch.service in both.
# Needs dpkg-deb and dpkg-shlibdeps (dpkg-dev), rpmbuild (rpm), strip (binutils), and cargo in
# the source tree (the third-party licences are generated from cargo metadata).
set -euo pipefail
bin=$(realpath "$1"); out=$(realpath -m "$2"); version=$3
here=$(cd "$(dirname "$0")" && pwd)
need() { # TOOL PACKAGE
  command -v "$1" >/dev/null || { echo "build-packages: $1 not found: apt-get install -y $2" >&2; exit 1; }
}
need dpkg-deb dpkg; need dpkg-shlibdeps dpkg-dev; need rpmbuild rpm; need strip binutils
if [ "${FAST:-0}" = 1 ]; then deb_level=-z1; rpm_payload=w1.gzdio; else deb_level=-z9; rpm_payload=w9.gzdio; fi
mkdir -p "$out"
work=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$work"' EXIT
umask 022
# The changelog's date, so that two builds of one tree are the same.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}

# ---- The tree both packages install: the document's paths and modes -------------------------
root=$work/root
install -D -m 0755 "$bin" "$root/usr/bin/relay-sync"
# As dh_strip does: no debug information (a debug build carries ~80 MB of it), no symbol table.
strip --strip-unneeded --remove-section=.comment "$root/usr/bin/relay-sync"
install -d -m 0755 "$root/opt/mailserver" "$root/opt/mailserver/config"
install -D -m 0600 "$here/relay-sync.conf" "$root/opt/mailserver/config/relay-sync.conf"
install -d -m 0700 "$root/opt/mailserver/backup"
install -d -m 0750 "$root/var/log/mailserver"
install -d -m 0700 "$root/var/lib/relay-sync"
install -D -m 0644 "$here/relay-sync.logrotate" "$root/etc/logrotate.d/relay-sync"
install -D -m 0644 "$here/relay-sync.service" "$root/usr/lib/systemd/system/relay-sync.service"
install -D -m 0644 "$here/relay-sync.timer" "$root/usr/lib/systemd/system/relay-sync.timer"
install -D -m 0644 "$here/relay-sync-watch.service" "$root/usr/lib/systemd/system/relay-sync-watch.service"
install -D -m 0644 "$here/relay-sync.cron" "$root/usr/share/relay-sync/relay-sync.cron"
install -D -m 0644 "$here/create-user.sql" "$root/usr/share/relay-sync/create-user.sql"
install -D -m 0644 "$here/sns-policy.json" "$root/usr/share/relay-sync/sns-policy.json"
install -D -m 0644 "$here/secret-policy.json" "$root/usr/share/relay-sync/secret-policy.json"
# The POSTFIX_COMMAND_PREFIX for a Postfix container ECS on EC2 names itself: root's, 0755, as
# relay-sync vets a program it runs as root. Not in PATH: it is named by its path in the config.
install -D -m 0755 "$here/container/relay-sync-container-exec" \
  "$root/usr/share/relay-sync/container/relay-sync-container-exec"
install -D -m 0644 "$here/copyright" "$root/usr/share/doc/relay-sync/copyright"
# relay-sync's own licence texts, and those of every crate linked into the binary, generated
# now from cargo metadata (`cargo xtask licenses`; needs the source tree and cargo).
install -m 0644 "$here/../LICENSE-MIT" "$here/../LICENSE-APACHE" "$root/usr/share/doc/relay-sync/"
(cd "$here/.." && "${CARGO:-cargo}" xtask licenses "$work/THIRD-PARTY-LICENSES")
install -m 0644 "$work/THIRD-PARTY-LICENSES" "$root/usr/share/doc/relay-sync/THIRD-PARTY-LICENSES"
# The JSON Schemas of the --json documents (generated from the types, kept equal by a test),
# and the monitoring mixin: Prometheus alerting rules and a Grafana dashboard.
install -d -m 0755 "$root/usr/share/relay-sync/schema" "$root/usr/share/relay-sync/monitoring"
install -m 0644 "$here/../docs/schema/"*.schema.json "$root/usr/share/relay-sync/schema/"
install -m 0644 "$here/monitoring/relay-sync-alerts.yml" "$here/monitoring/relay-sync-dashboard.json" \
  "$root/usr/share/relay-sync/monitoring/"
# Every man page the binary renders (relay-sync(1), one per command, and relay-sync.conf(5)
# once it exists), from the same clap definition as --help; the binary lists them.
"$bin" man --out-dir "$work/man" >"$work/man.list"
while read -r page; do
  section=${page##*.}
  install -d -m 0755 "$root/usr/share/man/man$section"
  gzip -n -9 <"$work/man/$page" >"$root/usr/share/man/man$section/$page.gz"
  chmod 0644 "$root/usr/share/man/man$section/$page.gz"
done <"$work/man.list"
install -d -m 0755 "$root/usr/share/bash-completion/completions" "$root/usr/share/fish/vendor_completions.d"
"$bin" completions bash >"$root/usr/share/bash-completion/completions/relay-sync"
"$bin" completions fish >"$root/usr/share/fish/vendor_completions.d/relay-sync.fish"
"$bin" completions zsh >"$work/_relay-sync"
chmod 0644 "$root"/usr/share/bash-completion/completions/* "$root"/usr/share/fish/vendor_completions.d/*

# The maintainer, as packaging/changelog's latest entry names it.
maintainer=$(sed -n 's/^ -- \(.*>\)  .*/\1/p' "$here/changelog" | head -1)

# The changelog: packaging/changelog, with an entry for VERSION on top when it is not the
# latest (a test or snapshot build).
changelog=$work/changelog
if ! head -1 "$here/changelog" | grep -qF "relay-sync ($version)"; then
  {
    echo "relay-sync ($version) unstable; urgency=medium"
    echo
    echo "  * Built from the working tree."
    echo
    echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
    echo
    cat "$here/changelog"
  } >"$changelog"
else
  cp "$here/changelog" "$changelog"
fi

# ---- .deb ---------------------------------------------------------------------------------
deb_arch=$(dpkg --print-architecture)
debroot=$work/deb
cp -a "$root" "$debroot"
# Debian's places: zsh's vendor completions, the changelog (a native version has no
# Debian revision, so it is changelog.gz), lintian's overrides.
install -D -m 0644 "$work/_relay-sync" "$debroot/usr/share/zsh/vendor-completions/_relay-sync"
case $version in
  *-*) changelog_name=changelog.Debian.gz ;;
  *) changelog_name=changelog.gz ;;
esac
gzip -n -9 <"$changelog" >"$debroot/usr/share/doc/relay-sync/$changelog_name"
chmod 0644 "$debroot/usr/share/doc/relay-sync/$changelog_name"
install -D -m 0644 "$here/deb/lintian-overrides" "$debroot/usr/share/lintian/overrides/relay-sync"
install -d -m 0755 "$debroot/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "$here/deb/$script" "$debroot/DEBIAN/$script"
done
printf '%s\n' /opt/mailserver/config/relay-sync.conf /etc/logrotate.d/relay-sync >"$debroot/DEBIAN/conffiles"
# dpkg-shlibdeps wants a debian/control to read; it only needs the package's name.
mkdir -p "$work/shlibs/debian"
printf 'Source: relay-sync\n\nPackage: relay-sync\nArchitecture: any\n' >"$work/shlibs/debian/control"
depends=$(cd "$work/shlibs" && dpkg-shlibdeps -O -e"$debroot/usr/bin/relay-sync" | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build-packages: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
installed_size=$(du -k -s --apparent-size --exclude=DEBIAN "$debroot" | cut -f1)
cat >"$debroot/DEBIAN/control" <<CONTROL
Package: relay-sync
Version: $version
Architecture: $deb_arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Recommends: postfix, logrotate
Section: mail
Priority: optional
Description: keep Postfix relay_domains and transport in step with MariaDB
 Reads the enabled domains of a mail admin panel's MariaDB and updates a
 Postfix MX gateway's relay_domains and transport map, with backups, a
 safety guard and rollback. Run by a systemd timer or cron every 5
 minutes; neither is enabled by the package.
CONTROL
# md5sums of every file but the conffiles (dpkg keeps theirs), as dh_md5sums writes them.
(cd "$debroot" && find . -type f ! -path './DEBIAN/*' -printf '%P\n' | LC_ALL=C sort \
  | grep -vxF -f <(sed 's#^/##' DEBIAN/conffiles) | xargs -d '\n' md5sum) >"$debroot/DEBIAN/md5sums"
chmod 0644 "$debroot/DEBIAN/control" "$debroot/DEBIAN/conffiles" "$debroot/DEBIAN/md5sums"
deb=$out/relay-sync_${version}_${deb_arch}.deb
dpkg-deb --root-owner-group -Zgzip "$deb_level" --build "$debroot" "$deb" >/dev/null

# ---- .rpm: the same tree, packaged by rpmbuild from the staged files (no compilation) -------
rpm_arch=$(uname -m)
top=$work/rpmbuild
mkdir -p "$top"/{BUILD,RPMS,SOURCES,SPECS,SRPMS,BUILDROOT}
rpm_version=${version//-/_}
rpmroot=$work/rpm
cp -a "$root" "$rpmroot"
# zsh's own directory on Fedora and Amazon Linux.
install -D -m 0644 "$work/_relay-sync" "$rpmroot/usr/share/zsh/site-functions/_relay-sync"
# The Debian changelog as RPM's %changelog: `* Day Mon DD YYYY Name <mail> - VERSION`, then
# the entry's lines.
rpm_changelog=$(awk '
  /^relay-sync \(/ { version = $2; gsub(/[()]/, "", version); n = 0; next }
  /^  \* / { lines[++n] = "- " substr($0, 5); next }
  /^    / { lines[n] = lines[n] " " substr($0, 5); next }
  /^ -- / {
    split($0, parts, ">  "); who = substr(parts[1], 5) ">"
    cmd = "date -u -d \"" parts[2] "\" \"+%a %b %d %Y\""; cmd | getline day; close(cmd)
    printf "* %s %s - %s-1\n", day, who, version
    for (i = 1; i <= n; i++) print lines[i]
    print ""
  }' "$changelog")
files=$(cd "$rpmroot" && find . -mindepth 1 \( -type f -o -type l \) -printf '/%P\n' | LC_ALL=C sort)
file_lines() { # the %files lines of the regular files, with their modes
  local path mode
  while read -r path; do
    mode=$(stat -c %a "$rpmroot$path")
    case $path in
      /opt/mailserver/config/relay-sync.conf | /etc/logrotate.d/relay-sync)
        echo "%config(noreplace) %attr(0$mode,root,root) $path" ;;
      /usr/share/doc/relay-sync/copyright | /usr/share/doc/relay-sync/LICENSE-* | \
        /usr/share/doc/relay-sync/THIRD-PARTY-LICENSES)
        echo "%license %attr(0$mode,root,root) $path" ;;
      *) echo "%attr(0$mode,root,root) $path" ;;
    esac
  done <<<"$files"
}
cat >"$top/SPECS/relay-sync.spec" <<SPEC
Name: relay-sync
Version: $rpm_version
Release: 1
Summary: Keep Postfix relay_domains and transport in step with MariaDB
License: MIT OR Apache-2.0
Group: System Environment/Daemons
Packager: $maintainer
BuildArch: $rpm_arch
Recommends: postfix
# The log is rotated by /etc/logrotate.d/relay-sync; without logrotate it grows for ever.
Requires: logrotate
%global debug_package %{nil}
%global __os_install_post %{nil}
# What systemd-rpm-macros defines on Fedora and Amazon Linux; Debian's rpm has no such file.
%{!?systemd_requires: %global systemd_requires Requires(post): systemd\\
Requires(preun): systemd\\
Requires(postun): systemd}
%{!?systemd_post: %define systemd_post() if [ \$1 -eq 1 ]; then systemctl --no-reload preset %{?*} >/dev/null 2>\&1 || :; fi}
%{!?systemd_preun: %define systemd_preun() if [ \$1 -eq 0 ]; then systemctl --no-reload disable --now %{?*} >/dev/null 2>\&1 || :; fi}
%{!?systemd_postun: %define systemd_postun() if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>\&1 || :; fi}
%{!?systemd_postun_with_restart: %define systemd_postun_with_restart() if [ \$1 -ge 1 ]; then systemctl try-restart %{?*} >/dev/null 2>\&1 || :; fi}
%{?systemd_requires}
%description
Reads the enabled domains of a mail admin panel's MariaDB and updates a
Postfix MX gateway's relay_domains and transport map, with backups, a
safety guard and rollback. Run by a systemd timer or cron every 5
minutes; neither is enabled by the package.
%install
cp -a "$rpmroot"/. %{buildroot}/
%post
# preset: enabled only where the distribution's preset says so (Fedora and Amazon Linux: not).
%systemd_post relay-sync.service relay-sync.timer relay-sync-watch.service
%preun
%systemd_preun relay-sync.timer relay-sync.service relay-sync-watch.service
%postun
%systemd_postun relay-sync.service relay-sync.timer relay-sync-watch.service
# An upgrade (\$1 >= 1) restarts a running watcher, so that the new binary runs; a stopped one
# stays stopped. The timer's oneshot service is not restarted: that would run a sync.
%systemd_postun_with_restart relay-sync-watch.service
%files
%dir %attr(0755,root,root) /opt/mailserver
%dir %attr(0755,root,root) /opt/mailserver/config
%dir %attr(0700,root,root) /opt/mailserver/backup
%dir %attr(0750,root,root) /var/log/mailserver
%dir %attr(0700,root,root) /var/lib/relay-sync
%dir %attr(0755,root,root) /usr/share/relay-sync
%dir %attr(0755,root,root) /usr/share/relay-sync/container
%dir %attr(0755,root,root) /usr/share/relay-sync/schema
%dir %attr(0755,root,root) /usr/share/relay-sync/monitoring
%dir %attr(0755,root,root) /usr/share/doc/relay-sync
$(file_lines)
%changelog
$rpm_changelog
SPEC
rpmbuild --quiet -bb --nodeps --define "_topdir $top" --define "_build_id_links none" \
  --define "_binary_payload $rpm_payload" \
  "$top/SPECS/relay-sync.spec" >/dev/null
rpm=$out/relay-sync-${rpm_version}-1.${rpm_arch}.rpm
mv "$top/RPMS/$rpm_arch/"*.rpm "$rpm"
echo "$deb"
echo "$rpm"
