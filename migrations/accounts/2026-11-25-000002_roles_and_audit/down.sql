DROP INDEX users_email_lower;
DROP TRIGGER audit_log_append_only ON audit_log;
DROP FUNCTION audit_log_append_only();
DROP TABLE audit_log;
DROP TABLE user_roles;
DROP TABLE role_permissions;
DROP TABLE roles;
