DROP TABLE failed_sends;
