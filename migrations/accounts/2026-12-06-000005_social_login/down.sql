DROP TABLE social_codes;
DROP TABLE social_states;
DROP TABLE social_link_tickets;
DROP TABLE identities;
