"""Search words: a row per batch while the session runs, one document once it is sealed
(``recordings.search``).

Folding each batch into the session's document made every batch rewrite the whole
document (up to 20,000 words) and insert all of its words again into the GIN index (the
row's new version): PostgreSQL's CPU per recorded statement grew with the session's
vocabulary. Now a batch adds a row of its own words, and the session's document is
written once, when it is sealed. Existing documents stay as they are.
"""

import importlib

import django.contrib.postgres.search
import django.db.models.deletion
from django.db import migrations, models

# The function that folded a batch into the session's document (kept for the way back),
# and the helper that runs SQL on PostgreSQL only.
_BEFORE = importlib.import_module("recordings.migrations.0003_replay_search")

POSTGRES_FORWARD = [
    "CREATE INDEX recordings_searchwords_words ON recordings_searchwords USING gin (words)",
    # A batch's words as the parser sees them, and the words between punctuation too, so
    # "srv" finds "/srv" and "mail" finds "ops@mail.example" (the parser keeps paths,
    # hosts and e-mail addresses whole). NULL when there are none, or when they would
    # outgrow a tsvector (1 MB): the batch's events are written all the same.
    """
    CREATE OR REPLACE FUNCTION recordings_search_words(words text) RETURNS tsvector
    LANGUAGE plpgsql AS $$
    DECLARE
        found tsvector;
    BEGIN
        found := strip(to_tsvector('simple', words || ' ' || regexp_replace(words, '[^[:alnum:]_]+', ' ', 'g')));
        RETURN CASE WHEN length(found) = 0 THEN NULL ELSE found END;
    EXCEPTION WHEN program_limit_exceeded THEN
        RETURN NULL;
    END
    $$
    """,
    # A sealed session's rows folded into its document, once (recordings.search.merge_words).
    # False, leaving everything as it was, when the words are too many for one document
    # (more than 100,000, or over the 1 MB limit): the rows are still searched.
    """
    CREATE OR REPLACE FUNCTION recordings_search_merge(session uuid) RETURNS boolean
    LANGUAGE plpgsql AS $$
    DECLARE
        merged tsvector;
        batches integer;
        lexemes bigint;
    BEGIN
        SELECT count(*), coalesce(sum(length(words)), 0) INTO batches, lexemes
        FROM recordings_searchwords WHERE session_id = session;
        IF batches = 0 THEN
            RETURN true;
        END IF;
        SELECT lexemes + coalesce(length(search_vector), 0) INTO lexemes
        FROM recordings_session WHERE id = session;
        IF lexemes > 100000 THEN
            RETURN false;
        END IF;
        SELECT strip(coalesce(s.search_vector, ''::tsvector) || w.words) INTO merged
        FROM recordings_session s,
             (SELECT string_agg(words::text, ' ')::tsvector AS words
              FROM recordings_searchwords WHERE session_id = session) w
        WHERE s.id = session;
        UPDATE recordings_session SET search_vector = merged WHERE id = session;
        DELETE FROM recordings_searchwords WHERE session_id = session;
        RETURN true;
    EXCEPTION WHEN program_limit_exceeded THEN
        RETURN false;
    END
    $$
    """,
    "DROP FUNCTION IF EXISTS recordings_search_append(tsvector, text)",
]
POSTGRES_BACKWARD = [
    # Words of batches not merged yet go into their sessions' documents.
    """
    UPDATE recordings_session s SET search_vector = strip(coalesce(s.search_vector, ''::tsvector) || w.words)
    FROM (SELECT session_id, string_agg(words::text, ' ')::tsvector AS words
          FROM recordings_searchwords GROUP BY session_id) w
    WHERE w.session_id = s.id
    """,
    "DROP FUNCTION IF EXISTS recordings_search_merge(uuid)",
    "DROP FUNCTION IF EXISTS recordings_search_words(text)",
    *[sql for sql in _BEFORE.POSTGRES_FORWARD if "FUNCTION" in sql],
]


_on_postgres = _BEFORE._on_postgres


class Migration(migrations.Migration):
    dependencies = [
        ("recordings", "0006_recount_reviewed"),
    ]

    operations = [
        migrations.CreateModel(
            name="SearchWords",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("words", django.contrib.postgres.search.SearchVectorField()),
                (
                    "session",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="recordings.session"
                    ),
                ),
            ],
        ),
        migrations.RunPython(_on_postgres(POSTGRES_FORWARD), _on_postgres(POSTGRES_BACKWARD)),
    ]
