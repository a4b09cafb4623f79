-- Fencing tokens for leases: every claim increments a delivery's lease_token, and a pass's
-- final write changes the delivery only while the row still carries the claiming node's id and
-- the token it claimed with. A node that lost its lease (paused past it, or a skewed clock)
-- can then only add its late attempt to the record; the state, due time and lease stay as the
-- node that holds the lease leaves them.
ALTER TABLE deliveries ADD COLUMN lease_token bigint NOT NULL DEFAULT 0;
