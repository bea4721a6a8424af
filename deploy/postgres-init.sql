-- Run once by the postgres image at first start (docker-entrypoint-initdb.d), as the superuser.
-- The service connects as `ballistics`, an ORDINARY role: PostgreSQL superusers bypass row-level
-- security, so a service connected as one would lose the second line of defence
-- (index/migrations/postgresql/0002_row_security.sql). The password comes from the
-- environment (BALLISTICS_DB_PASSWORD, set in compose.yaml); change it.
\set pw `echo "$BALLISTICS_DB_PASSWORD"`
CREATE ROLE ballistics LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
CREATE DATABASE ballistics OWNER ballistics;
