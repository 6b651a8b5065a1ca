DROP TRIGGER deliveries_notify ON deliveries;
DROP FUNCTION deliveries_notify();
DROP TABLE deliveries;
