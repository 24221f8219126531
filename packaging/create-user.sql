-- The read-only database user relay-sync connects as, on the admin panel's MariaDB host.
-- relay-sync only ever reads `domains`; `relay-sync check` warns loudly when the user may do
-- more. Replace GATEWAY_IP with the MX gateway's address as MariaDB sees it (e.g. its Tailscale
-- IP) and CHANGE_ME_PASSWORD with a generated password, then run as an administrator:
--
--   sed -e 's/GATEWAY_IP/100.64.0.10/' -e "s/CHANGE_ME_PASSWORD/$(openssl rand -hex 24)/" \
--       create-user.sql | mariadb
--
-- Put the same password in DB_PASSWORD_FILE (mode 0600) or your secret store on the gateway.
CREATE USER IF NOT EXISTS 'relay_sync'@'GATEWAY_IP' IDENTIFIED BY 'CHANGE_ME_PASSWORD';
GRANT SELECT ON mailserver_usermgmt.domains TO 'relay_sync'@'GATEWAY_IP';
-- Nothing else: no other table, no other privilege, no GRANT OPTION.
