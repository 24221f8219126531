-- The read-only database user relay-sync connects as, on the admin panel's MariaDB host.
-- relay-sync only ever reads `domains`; `relay-sync check` warns loudly when the user may do
-- more. Replace GATEWAY_IP with the MX gateway's address as MariaDB sees it (e.g. its Tailscale
-- IP) and CHANGE_ME_PASSWORD with a generated password, then run as an administrator:
--
--   PASSWORD=$(openssl rand -hex 24); echo "$PASSWORD"
--   sed -e 's/GATEWAY_IP/100.64.0.10/' -e "s/CHANGE_ME_PASSWORD/$PASSWORD/" create-user.sql | mariadb
--
-- Put the same password in DB_PASSWORD_FILE (mode 0600) or your secret store on the gateway.
CREATE USER IF NOT EXISTS 'relay_sync'@'GATEWAY_IP' IDENTIFIED BY 'CHANGE_ME_PASSWORD';
GRANT SELECT ON mailserver_usermgmt.domains TO 'relay_sync'@'GATEWAY_IP';
-- Nothing else: no other table, no other privilege, no GRANT OPTION.

-- Opt-in, for recipient validation only (RECIPIENTS_QUERY, off by default): relay-sync then
-- also reads which addresses exist. Uncomment the GRANT below only if you set RECIPIENTS_QUERY,
-- and adapt the table and columns to your query. It names the columns on purpose: the users
-- table also holds password hashes, which the gateway must never be able to read.
-- `relay-sync check` accepts exactly this (SELECT on some of email and enabled) and warns on
-- anything more.
--
-- GRANT SELECT (email, enabled) ON mailserver_usermgmt.users TO 'relay_sync'@'GATEWAY_IP';
