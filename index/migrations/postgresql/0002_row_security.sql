-- Version 2: row-level security per agency, a second line of defence behind the sharing
-- policy (server/policy.py decides what a caller may see; these policies make the database
-- refuse what the application should never ask for, should a bug let it).
--
-- A session says whom it acts for with two settings (index/store_pg.py, PgStore.acting_for):
--   app.agency    the agency it writes for: casings, incidents and decisions it inserts or
--                 updates must be that agency's;
--   app.agencies  comma-separated agencies whose casings and incidents it may read.
-- A setting left unset (or '') does not restrict: the service's own maintenance (start-up,
-- index rebuilds, background correlation across agencies under the sharing policy) runs so.
-- The policies bind the tables' owner too (FORCE), but never a superuser: connect the service
-- as an ordinary role (docs/deployment.md).
-- Casings are never hard-deleted (soft delete, kept for the audit trail): no DELETE policy,
-- so the database refuses a DELETE of a casing row outright.
CREATE FUNCTION app_may_read(ag TEXT) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT COALESCE(current_setting('app.agencies', true), '') = ''
        OR ag = ANY(string_to_array(current_setting('app.agencies', true), ','))
$$;
CREATE FUNCTION app_may_write(ag TEXT) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT COALESCE(current_setting('app.agency', true), '') = ''
        OR ag IS NOT DISTINCT FROM current_setting('app.agency', true)
$$;

ALTER TABLE casings ENABLE ROW LEVEL SECURITY;
ALTER TABLE casings FORCE ROW LEVEL SECURITY;
CREATE POLICY casings_read ON casings FOR SELECT USING (app_may_read(agency));
CREATE POLICY casings_insert ON casings FOR INSERT WITH CHECK (app_may_write(agency));
CREATE POLICY casings_update ON casings FOR UPDATE
    USING (app_may_write(agency)) WITH CHECK (app_may_write(agency));

ALTER TABLE incidents ENABLE ROW LEVEL SECURITY;
ALTER TABLE incidents FORCE ROW LEVEL SECURITY;
CREATE POLICY incidents_read ON incidents FOR SELECT USING (app_may_read(agency));
CREATE POLICY incidents_insert ON incidents FOR INSERT WITH CHECK (app_may_write(agency));
CREATE POLICY incidents_update ON incidents FOR UPDATE
    USING (app_may_write(agency)) WITH CHECK (app_may_write(agency));

-- Decisions: anyone may read the record (a decision shows only through casings one may see);
-- an insert must carry the acting agency. UPDATE and DELETE policies exist only so that the
-- append-only trigger (version 1) answers them with its error instead of RLS silently
-- matching no row.
ALTER TABLE decisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE decisions FORCE ROW LEVEL SECURITY;
CREATE POLICY decisions_read ON decisions FOR SELECT USING (true);
CREATE POLICY decisions_insert ON decisions FOR INSERT WITH CHECK (app_may_write(agency));
CREATE POLICY decisions_update ON decisions FOR UPDATE USING (true);
CREATE POLICY decisions_delete ON decisions FOR DELETE USING (true);
