CREATE TABLE plans (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL,
    down_rate_kbit INTEGER NOT NULL,
    down_ceil_kbit INTEGER NOT NULL,
    up_rate_kbit   INTEGER NOT NULL,
    up_ceil_kbit   INTEGER NOT NULL,
    burst_bytes    INTEGER NOT NULL,
    weight         INTEGER NOT NULL DEFAULT 1,
    CHECK (id >= 0),
    CHECK (down_rate_kbit >= 1 AND down_rate_kbit <= down_ceil_kbit),
    CHECK (up_rate_kbit >= 1 AND up_rate_kbit <= up_ceil_kbit),
    CHECK (burst_bytes >= 1500),
    CHECK (weight >= 1)
);

CREATE TABLE members (
    id      INTEGER PRIMARY KEY,
    name    TEXT    NOT NULL,
    status  TEXT    NOT NULL DEFAULT 'active',
    plan_id INTEGER REFERENCES plans (id),
    CHECK (id >= 0),
    CHECK (status IN ('active', 'blocked', 'test')),
    CHECK (status <> 'test' OR plan_id IS NOT NULL)
);

CREATE TABLE member_addresses (
    id        INTEGER PRIMARY KEY,
    member_id INTEGER NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    network   TEXT    NOT NULL UNIQUE,
    device    TEXT
);
CREATE INDEX member_addresses_member ON member_addresses (member_id);

CREATE TABLE public_addresses (
    id         INTEGER PRIMARY KEY,
    member_id  INTEGER NOT NULL UNIQUE REFERENCES members (id) ON DELETE CASCADE,
    address    TEXT    NOT NULL,
    first_port INTEGER NOT NULL DEFAULT 1,
    last_port  INTEGER NOT NULL DEFAULT 65535,
    CHECK (first_port >= 1 AND first_port <= last_port AND last_port <= 65535)
);

CREATE TABLE port_forwards (
    id               INTEGER PRIMARY KEY,
    member_id        INTEGER NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    protocol         TEXT    NOT NULL,
    public_port      INTEGER NOT NULL,
    internal_address TEXT    NOT NULL,
    internal_port    INTEGER NOT NULL,
    CHECK (protocol IN ('tcp', 'udp')),
    CHECK (public_port BETWEEN 1 AND 65535),
    CHECK (internal_port BETWEEN 1 AND 65535),
    UNIQUE (member_id, protocol, public_port)
);

CREATE TABLE ipv6_openings (
    id          INTEGER PRIMARY KEY,
    member_id   INTEGER NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    destination TEXT    NOT NULL,
    protocol    TEXT    NOT NULL,
    first_port  INTEGER NOT NULL,
    last_port   INTEGER NOT NULL,
    CHECK (protocol IN ('tcp', 'udp')),
    CHECK (first_port >= 1 AND first_port <= last_port AND last_port <= 65535)
);

CREATE TABLE networks (
    id     INTEGER PRIMARY KEY,
    prefix TEXT    NOT NULL,
    kind   TEXT    NOT NULL,
    CHECK (kind IN ('internal', 'box'))
);

CREATE TABLE global_blocks (
    id        INTEGER PRIMARY KEY,
    prefix    TEXT NOT NULL,
    direction TEXT NOT NULL DEFAULT 'both',
    comment   TEXT NOT NULL DEFAULT '',
    CHECK (direction IN ('inbound', 'outbound', 'both'))
);

CREATE TABLE accounting (
    member_id    INTEGER NOT NULL,
    period_start BIGINT  NOT NULL,
    direction    TEXT    NOT NULL,
    bytes        BIGINT  NOT NULL DEFAULT 0,
    packets      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (member_id, period_start, direction),
    CHECK (direction IN ('inbound', 'outbound')),
    CHECK (bytes >= 0 AND packets >= 0)
);
