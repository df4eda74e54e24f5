"""Examples for every built-in detector: values it must mask and look-alikes it must not.

Secrets here are well-known documentation examples or made up; none is live.
"""

from __future__ import annotations

# entity -> (text, the exact secret in it)
POSITIVE: dict[str, list[tuple[str, str]]] = {
    "email": [
        ("bob@example.com", "bob@example.com"),
        ("mail Alice.Smith+billing@mail.example.co.uk today", "Alice.Smith+billing@mail.example.co.uk"),
        ("<carol_1990@sub.example.org>", "carol_1990@sub.example.org"),
        ("end of sentence ops@example.net.", "ops@example.net"),
        ("josé@exemple.fr", "josé@exemple.fr"),
    ],
    "phone": [
        ("+1 555 201 3344", "+1 555 201 3344"),
        ("call +44 (0)20 7946 0958 now", "+44 (0)20 7946 0958"),
        ("+33 1 23 45 67 89", "+33 1 23 45 67 89"),
        ("+4930123456", "+4930123456"),
        ("(555) 201-3344", "(555) 201-3344"),
        ("office 555-201-3344", "555-201-3344"),
        ("fax 555.201.3344", "555.201.3344"),
        ("london 020 7946 0958", "020 7946 0958"),
    ],
    "card": [
        ("4111111111111111", "4111111111111111"),
        ("card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111"),
        ("5500-0000-0000-0004", "5500-0000-0000-0004"),
        ("amex 3782 822463 10005", "3782 822463 10005"),
        ("4111 1111 1111 1111 12/27", "4111 1111 1111 1111"),
        ("visa13 4222222222222", "4222222222222"),
        ("6011000990139424,", "6011000990139424"),
    ],
    "iban": [
        ("GB82WEST12345698765432", "GB82WEST12345698765432"),
        ("pay to GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32"),
        ("DE89370400440532013000", "DE89370400440532013000"),
        ("FR1420041010050500013M02606", "FR1420041010050500013M02606"),
    ],
    "ssn": [
        ("123-45-6789", "123-45-6789"),
        ("ssn: 078 05 1120.", "078 05 1120"),
        ("id 536-22-8726 on file", "536-22-8726"),
    ],
    "ip": [
        ("10.1.2.3", "10.1.2.3"),
        ("from 192.168.0.254:5432", "192.168.0.254"),
        ("255.255.255.255", "255.255.255.255"),
        ("net 10.0.0.0/8", "10.0.0.0"),
        ("2001:db8::8a2e:370:7334", "2001:db8::8a2e:370:7334"),
        ("link fe80::1 up", "fe80::1"),
        ("[::1]:5432", "::1"),
        ("2001:0db8:0000:0000:0000:ff00:0042:8329", "2001:0db8:0000:0000:0000:ff00:0042:8329"),
        ("mapped ::ffff:192.0.2.128.", "::ffff:192.0.2.128"),
    ],
    "jwt": [
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ),
        ("token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. end", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
    ],
    "aws_access_key_id": [
        ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("key=ASIAY34FZKBOKMUTVV7A;", "ASIAY34FZKBOKMUTVV7A"),
    ],
    "aws_secret_key": [
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (
            '{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}',
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (
            "AWS_SECRET_ACCESS_KEY=je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
            "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
        ),
    ],
    "github_token": [
        ("ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"),
        ("use gho_16C7e42F292c6912E7710c838347Ae178B4a now", "gho_16C7e42F292c6912E7710c838347Ae178B4a"),
        (
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRS",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRS",
        ),
    ],
    "gitlab_token": [
        ("glpat-xxxxxxxxxxxxxxxxxxxx", "glpat-xxxxxxxxxxxxxxxxxxxx"),
        ("CI uses gldt-AbCdEfGhIjKlMnOpQrSt12 for deploys", "gldt-AbCdEfGhIjKlMnOpQrSt12"),
    ],
    "slack_token": [
        (
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        ),
        ("xapp-1-A0123456789-1234567890123-abcdef", "xapp-1-A0123456789-1234567890123-abcdef"),
        (
            "hook https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        ),
    ],
    "stripe_key": [
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("rk_test_51H8yQ2eZvKYlo2C0aBcDeFgHi", "rk_test_51H8yQ2eZvKYlo2C0aBcDeFgHi"),
        ("whsec_1234567890abcdefghijABCDEFGHIJ", "whsec_1234567890abcdefghijABCDEFGHIJ"),
    ],
    "google_api_key": [
        ("AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
        ("key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe&q=1", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
    ],
    "private_key": [
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\nabc\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\nabc\n-----END RSA PRIVATE KEY-----",
        ),
        (
            "key: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY----- done",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC (truncated",
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC (truncated",
        ),
    ],
    "password": [
        ("postgres://app:s3cr3t@db.example.com:5432/shop", "s3cr3t"),
        ("redis://:hunter2@cache:6379/0", "hunter2"),
        ("https://bob:p@ss:w0rd@git.example.com/repo.git", "p@ss:w0rd"),
        ("host=db port=5432 user=app password=s3cr3t dbname=shop", "s3cr3t"),
        ("host=db password = 'two words' user=x", "two words"),
        ("Driver={PostgreSQL};Server=db;Uid=app;Pwd=Tr0ub4dor;", "Tr0ub4dor"),
        ('{"user": "app", "password": "correct horse"}', "correct horse"),
        ("PGPASSWORD=hunter22 psql -h db", "hunter22"),
    ],
    "bearer_token": [
        ("Authorization: Bearer abcdefghijklmnop1234", "abcdefghijklmnop1234"),
        ("curl -H 'authorization: Basic dXNlcjpwYXNzd29yZA=='", "dXNlcjpwYXNzd29yZA=="),
        ("bearer mF_9.B5f-4.1JqM_tok3n", "mF_9.B5f-4.1JqM_tok3n"),
    ],
}

# entity -> texts where that entity must not be found
NEGATIVE: dict[str, list[str]] = {
    "email": ["bob at example.com", "user@localhost", "@handle", "a@b.c", "SELECT x FROM t WHERE a @> b"],
    "phone": ["2024-01-15 12:30:00+00", "+00", "order 1234567", "version 1.2.3", "x+1 2", "call 555-0123"],
    "card": [
        "4111111111111112",  # fails Luhn
        "order 1234567812345678",  # fails Luhn
        "0000000000000000",  # starts with 0
        "411111111111",  # too short
        "41111111111111111111111",  # too long
        "2024-01-15 12:30:00",
    ],
    "iban": ["GB82WEST12345698765433", "GB82 WEST", "XX82WEST12345698765432", "ID12 code", "ABCD1234"],
    "ssn": [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "123-00-4567",
        "123-45-0000",
        "123-45-67890",
        "2024-01-15",
    ],
    "ip": [
        "999.1.1.1",
        "256.1.1.1",
        "1.2.3",
        "12:30:00",
        "00:1a:2b:3c:4d:5e",
        "SELECT x::int",
        "1.2.3.4.5",
        "::",
        "amount 12345.67",
    ],
    "jwt": ["eyJub3QiOiJ0aGlzIn0.eyJ4IjoxfQ.c2ln", "eyJhbGciOiJIUzI1NiJ9", "eyJ!notbase64.x.y"],
    "aws_access_key_id": ["AKIA1234", "XAKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLEX"],
    "aws_secret_key": ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "secret_access_key = short"],
    "github_token": ["ghp_short", "xghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"],
    "gitlab_token": ["glpat-short", "the glpat- prefix"],
    "slack_token": ["xoxb-short", "https://hooks.slack.com/"],
    "stripe_key": ["sk_live_", "pk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_other_4eC39HqLyjWDarjtT1zdp7dc"],
    "google_api_key": ["AIzaShort", "AIza"],
    "private_key": [
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----",
    ],
    "password": [
        "postgres://app@db.example.com/shop",
        "http://example.com:8080/x@y",
        "passwordless=true",
        'password authentication failed for user "app"',
        "password=",
    ],
    "bearer_token": ["the bearer of this letter", "Bearer short", "bearer realm"],
}
