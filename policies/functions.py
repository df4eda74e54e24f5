"""What calling a function does: built-in function sets and the operation each one implies.

A function the engine does not know (a user-defined or extension function, or a built-in of
a newer PostgreSQL than ``pg_catalog_data`` was made from) is opaque code: the classifier
marks it ``unknown_function`` and adds the ``procedural`` operation, so a policy that allows
only reads does not let it through. Known functions are read-only unless listed here.

Sets are named in rules as ``@name`` (``functions: ["@server_files"]``).
"""

from __future__ import annotations

from policies.pg_catalog_data import BUILTIN_FUNCTIONS, BUILTIN_OPERATORS

_LARGE_OBJECT_READS = frozenset(
    {"lo_get", "loread", "lo_open", "lo_close", "lo_lseek", "lo_lseek64", "lo_tell", "lo_tell64"}
)
_LARGE_OBJECT_WRITES = frozenset(
    {
        "lo_creat",
        "lo_create",
        "lo_from_bytea",
        "lo_put",
        "lo_truncate",
        "lo_truncate64",
        "lo_unlink",
        "lowrite",
    }
)

FUNCTION_SETS: dict[str, frozenset[str]] = {
    # Read, list or write files on the database server's file system.
    "server_files": frozenset(
        {
            "pg_read_file",
            "pg_read_binary_file",
            "pg_read_file_old",
            "pg_ls_dir",
            "pg_stat_file",
            "pg_ls_logdir",
            "pg_ls_waldir",
            "pg_ls_tmpdir",
            "pg_ls_archive_statusdir",
            "pg_ls_logicalsnapdir",
            "pg_ls_logicalmapdir",
            "pg_ls_replslotdir",
            "pg_ls_summariesdir",
            "pg_current_logfile",
            "pg_hba_file_rules",
            "pg_ident_file_mappings",
            "pg_show_all_file_settings",
            "lo_import",
            "lo_export",
            # adminpack
            "pg_file_write",
            "pg_file_rename",
            "pg_file_unlink",
            "pg_file_sync",
            "pg_logdir_ls",
        }
    ),
    # Act on other sessions or on the server process itself.
    "backend_control": frozenset(
        {
            "pg_terminate_backend",
            "pg_cancel_backend",
            "pg_reload_conf",
            "pg_rotate_logfile",
            "pg_rotate_logfile_old",
            "pg_logfile_rotate",
            "pg_promote",
            "pg_switch_wal",
            "pg_switch_xlog",
            "pg_wal_replay_pause",
            "pg_wal_replay_resume",
            "pg_xlog_replay_pause",
            "pg_xlog_replay_resume",
            "pg_log_backend_memory_contexts",
            "pg_log_standby_snapshot",
            "pg_stat_reset",
            "pg_stat_reset_shared",
            "pg_stat_reset_single_table_counters",
            "pg_stat_reset_single_function_counters",
            "pg_stat_reset_slru",
            "pg_stat_reset_replication_slot",
            "pg_stat_reset_subscription_stats",
            "pg_stat_reset_backend_stats",
            "pg_stop_making_pinned_objects",
            "pg_nextoid",
            "pg_import_system_collations",
            "pg_extension_config_dump",
        }
    ),
    # Index maintenance that rewrites index contents.
    "maintenance": frozenset(
        {
            "brin_summarize_new_values",
            "brin_summarize_range",
            "brin_desummarize_range",
            "gin_clean_pending_list",
        }
    ),
    "backup": frozenset(
        {"pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup", "pg_create_restore_point"}
    ),
    # Replication slots and origins: logical decoding reads every change, whatever the
    # table privileges.
    "replication": frozenset(
        {
            "pg_create_physical_replication_slot",
            "pg_create_logical_replication_slot",
            "pg_drop_replication_slot",
            "pg_copy_physical_replication_slot",
            "pg_copy_logical_replication_slot",
            "pg_replication_slot_advance",
            "pg_logical_slot_get_changes",
            "pg_logical_slot_get_binary_changes",
            "pg_logical_slot_peek_changes",
            "pg_logical_slot_peek_binary_changes",
            "pg_logical_emit_message",
            "pg_replication_origin_create",
            "pg_replication_origin_drop",
            "pg_replication_origin_advance",
            "pg_replication_origin_session_setup",
            "pg_replication_origin_session_reset",
            "pg_replication_origin_xact_setup",
            "pg_replication_origin_xact_reset",
            "pg_sync_replication_slots",
        }
    ),
    "large_objects": _LARGE_OBJECT_READS | _LARGE_OBJECT_WRITES | {"lo_import", "lo_export"},
    "sequences": frozenset({"nextval", "setval"}),
    # Changing a setting from inside an expression (the role, read-only mode, search_path...).
    "settings": frozenset({"set_config"}),
    # SET ROLE and SET SESSION AUTHORIZATION are statements (fact ``role_change``); from an
    # expression the role changes through set_config('role', ...).
    "role_changes": frozenset({"set_config"}),
    # Functions that run SQL given to them as text (or name a table as text): what they run
    # cannot be classified.
    "dynamic_sql": frozenset(
        {
            "query_to_xml",
            "query_to_xmlschema",
            "query_to_xml_and_xmlschema",
            "cursor_to_xml",
            "cursor_to_xmlschema",
            "table_to_xml",
            "table_to_xmlschema",
            "table_to_xml_and_xmlschema",
            "schema_to_xml",
            "schema_to_xmlschema",
            "schema_to_xml_and_xmlschema",
            "database_to_xml",
            "database_to_xmlschema",
            "database_to_xml_and_xmlschema",
            "ts_stat",
            "ts_rewrite",
        }
    ),
    # Extension functions that reach other servers.
    "remote_access": frozenset(
        {
            "dblink",
            "dblink_exec",
            "dblink_connect",
            "dblink_connect_u",
            "dblink_open",
            "dblink_fetch",
            "dblink_send_query",
            "dblink_get_result",
        }
    ),
    "advisory_locks": frozenset(
        {
            "pg_advisory_lock",
            "pg_advisory_lock_shared",
            "pg_advisory_unlock",
            "pg_advisory_unlock_all",
            "pg_advisory_unlock_shared",
            "pg_advisory_xact_lock",
            "pg_advisory_xact_lock_shared",
            "pg_try_advisory_lock",
            "pg_try_advisory_lock_shared",
            "pg_try_advisory_xact_lock",
            "pg_try_advisory_xact_lock_shared",
        }
    ),
    "notifications": frozenset({"pg_notify"}),
    "delays": frozenset({"pg_sleep", "pg_sleep_for", "pg_sleep_until"}),
}

# The operation a known function adds to its statement (functions not listed: ``read``).
_SET_OPERATIONS = {
    "server_files": "admin",
    "backend_control": "admin",
    "maintenance": "admin",
    "backup": "admin",
    "replication": "admin",
    "sequences": "write",
    "settings": "session",
    "dynamic_sql": "procedural",
    "remote_access": "procedural",
    "advisory_locks": "utility",
    "notifications": "utility",
}
FUNCTION_OPERATIONS: dict[str, str] = {
    **{name: "write" for name in _LARGE_OBJECT_WRITES},
    **{name: op for set_name, op in _SET_OPERATIONS.items() for name in FUNCTION_SETS[set_name]},
}

# Built-ins of PostgreSQL releases newer than the generated catalog whose behaviour is
# known to be read-only (a newer built-in not listed here is treated as unknown code).
_NEWER_READ_ONLY = frozenset(
    {
        "any_value",
        "array_sample",
        "array_shuffle",
        "random_normal",
        "erf",
        "erfc",
        "pg_input_is_valid",
        "pg_input_error_info",
        "uuidv4",
        "uuidv7",
        "uuid_extract_timestamp",
        "uuid_extract_version",
        "casefold",
        "system_user",
        "pg_split_walfile_name",
        "pg_get_wal_resource_managers",
        "pg_available_wal_summaries",
        "pg_wal_summary_contents",
        "pg_get_wal_summarizer_state",
        "pg_get_loaded_modules",
        "pg_numa_available",
    }
)

KNOWN_FUNCTIONS: frozenset[str] = (
    BUILTIN_FUNCTIONS
    | _NEWER_READ_ONLY
    | frozenset(FUNCTION_OPERATIONS)
    | frozenset(name for names in FUNCTION_SETS.values() for name in names)
)
KNOWN_OPERATORS: frozenset[str] = BUILTIN_OPERATORS

# Function sets whose use is also a fact a rule can match.
SET_FACTS = {"server_files": "server_file_access"}


def function_operation(name: str) -> str | None:
    """The operation a known function implies beyond ``read`` (None: read-only or unknown)."""
    if name.startswith("binary_upgrade_"):
        return "admin"
    return FUNCTION_OPERATIONS.get(name)


def in_set(name: str, set_name: str) -> bool:
    return name in FUNCTION_SETS[set_name]


# Volatile built-ins reviewed as read-only in effect (clocks, random numbers, sizes,
# status reports) or not callable from SQL at all (handlers and triggers taking
# ``internal`` or running only as triggers). A test checks that every volatile built-in
# of the server is either here or in a set above, so a new one is reviewed, not assumed.
HARMLESS_VOLATILE = frozenset(
    """
    clock_timestamp current_query currtid2 currval lastval gen_random_uuid random setseed timeofday
    pg_blocking_pids pg_safe_snapshot_blocking_pids pg_isolation_test_session_is_blocked
    pg_collation_actual_version pg_database_collation_actual_version
    pg_control_checkpoint pg_control_init pg_control_recovery pg_control_system
    pg_current_wal_flush_lsn pg_current_wal_insert_lsn pg_current_wal_lsn
    pg_last_wal_receive_lsn pg_last_wal_replay_lsn pg_last_xact_replay_timestamp pg_last_committed_xact
    pg_is_in_recovery pg_is_wal_replay_paused pg_get_wal_replay_pause_state pg_get_wal_resource_managers
    pg_database_size pg_relation_size pg_table_size pg_indexes_size pg_total_relation_size pg_tablespace_size
    pg_export_snapshot pg_get_backend_memory_contexts pg_get_multixact_members pg_get_shmem_allocations
    pg_jit_available pg_lock_status pg_notification_queue_usage pg_partition_ancestors pg_partition_tree
    pg_prepared_xact pg_sequence_last_value pg_xact_commit_timestamp pg_xact_commit_timestamp_origin
    pg_xact_status txid_status
    pg_replication_origin_progress pg_replication_origin_session_is_setup
    pg_replication_origin_session_progress pg_show_replication_origin_status
    pg_stat_clear_snapshot pg_stat_force_next_flush pg_stat_get_recovery_prefetch pg_stat_have_stats
    pg_stat_get_xact_blocks_fetched pg_stat_get_xact_blocks_hit pg_stat_get_xact_function_calls
    pg_stat_get_xact_function_self_time pg_stat_get_xact_function_total_time pg_stat_get_xact_numscans
    pg_stat_get_xact_tuples_deleted pg_stat_get_xact_tuples_fetched pg_stat_get_xact_tuples_hot_updated
    pg_stat_get_xact_tuples_inserted pg_stat_get_xact_tuples_returned pg_stat_get_xact_tuples_updated
    unique_key_recheck suppress_redundant_updates_trigger tsvector_update_trigger
    tsvector_update_trigger_column
    RI_FKey_cascade_del RI_FKey_cascade_upd RI_FKey_check_ins RI_FKey_check_upd RI_FKey_noaction_del
    RI_FKey_noaction_upd RI_FKey_restrict_del RI_FKey_restrict_upd RI_FKey_setdefault_del
    RI_FKey_setdefault_upd RI_FKey_setnull_del RI_FKey_setnull_upd
    amvalidate bernoulli system brinhandler bthandler ginhandler gisthandler hashhandler spghandler
    heap_tableam_handler dsnowball_init dsnowball_lexize plpgsql_call_handler plpgsql_inline_handler
    plpgsql_validator
    """.split()
)
