DROP TABLE mail_requests;
DROP TABLE login_failures;
DROP TABLE refresh_tokens;
