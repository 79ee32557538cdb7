/*
 * secconfig.h - the configuration object of the Azure IoT security module
 * (module `azureiotsecurity`, object
 * desired."ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration"): its
 * keys as data (type, schema default, which agent reads it), and a check of a
 * configuration object the way the two reference agents parse it, so that
 * `twinhub security check` and `ensure` refuse what an agent would refuse
 * (docs/cli.md "twinhub security"; facts and sources in docs/protocol.md
 * "The security module's configuration").
 *
 * The agents: the C agent (Azure/Azure-IoT-Security-Agent-C 0.0.6,
 * twin_configuration*.c, internal/time_utils.c,
 * collectors/agent_configuration_error_collector.c) and the C# agent
 * (Azure/Azure-IoT-Security-Agent-CS 0.0.6, RemoteConfiguration*.cs,
 * IsoTimespanConverter.cs, AgentConfigurationErrorEventGenerator.cs).
 *
 * Decisions where the agents differ (each check names the agent it follows):
 * - A value is refused when EITHER agent refuses it, so a configuration that
 *   passes works with both: durations are whole numbers (the C agent refuses
 *   fractions), without weeks (the C# agent's xs:duration has no W) or years
 *   (the C agent ignores the Y part), not zero and at most 4294967295 ms
 *   (the C agent's uint32 milliseconds); sizes are whole numbers from 0 to
 *   2147483647 (the C# agent's uint refuses negatives, the C agent reads an
 *   int32); priorities are the strings Off, Low, High in any case (the C
 *   agent; the C# agent would also take 0-3 and "Operational").
 * - The conflict checks run on the effective configuration, keys absent
 *   taking the schema defaults, which are the C# agent's: the C agent's
 *   default cache size is 10485760, not 2560000.
 * - Keys no agent reads are warnings, not problems: both agents ignore them.
 */
#ifndef TH_SECCONFIG_H
#define TH_SECCONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "th_result.h"

#define TH_SECCONFIG_MODULE_ID "azureiotsecurity"
#define TH_SECCONFIG_OBJECT "ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration"

/* The C agent's duration limit: milliseconds in a uint32. */
#define TH_SECCONFIG_MAX_DURATION_MS 4294967295ull
/* The largest size both agents read the same: the C agent's int32. */
#define TH_SECCONFIG_MAX_SIZE 2147483647.0
/* maxMessageSizeInBytes should be a multiple of this (billing unit, both agents). */
#define TH_SECCONFIG_MESSAGE_SIZE_MULTIPLE 4096

/* The JSON type of a key's "value". */
enum th_secconfig_type {
    TH_SECCONFIG_DURATION, /* ISO 8601 duration string, "PT7M" */
    TH_SECCONFIG_SIZE,     /* whole number of bytes */
    TH_SECCONFIG_PRIORITY, /* "Off", "Low" or "High", any case */
    TH_SECCONFIG_BOOL,     /* true or false */
    TH_SECCONFIG_STRING,   /* any string */
};

/* Which agents read a key (bits of th_secconfig_key.agents). */
#define TH_SECCONFIG_AGENT_C 1u
#define TH_SECCONFIG_AGENT_CS 2u

struct th_secconfig_key {
    const char *name;
    enum th_secconfig_type type;
    const char *schema_default; /* the value as JSON text; NULL when the schema has no default */
    unsigned agents;            /* TH_SECCONFIG_AGENT_* */
};

/*
 * Every key either agent reads, the 25 schema keys first in the order of the
 * batch script's document. Static data; *count gets the number of entries.
 */
const struct th_secconfig_key *th_secconfig_keys(size_t *count);

/* The key named exactly `name` (names are case-sensitive), or NULL. */
const struct th_secconfig_key *th_secconfig_key_find(const char *name);

/*
 * The default configuration object the batch script writes:
 * {"<key>": {"value": <schema default>}, ...} for every key with a schema
 * default. The caller frees it with cJSON_Delete; NULL when out of memory.
 */
cJSON *th_secconfig_defaults(void);

/* What kind of finding (the agents' ConfigurationError ErrorType, plus one warning). */
enum th_secconfig_kind {
    TH_SECCONFIG_TYPE_MISMATCH, /* an agent refuses the whole update */
    TH_SECCONFIG_CONFLICT,      /* applied, but the agents raise a Conflict */
    TH_SECCONFIG_NOT_OPTIMAL,   /* applied, but the agents raise a NotOptimal */
    TH_SECCONFIG_UNKNOWN_KEY,   /* no agent reads it: a warning, not a problem */
};

/* "TypeMismatch", "Conflict", "NotOptimal", "UnknownKey". */
const char *th_secconfig_kind_name(enum th_secconfig_kind kind);

struct th_secconfig_finding {
    enum th_secconfig_kind kind;
    char *key;         /* the configuration key (or TH_SECCONFIG_OBJECT for the whole object) */
    char message[320]; /* what is wrong and which agent says so */
};

/* The findings of one check; owned by the caller, freed with th_secconfig_report_free. */
struct th_secconfig_report {
    struct th_secconfig_finding *items; /* in the order of the object's members, then conflicts */
    size_t count;
    size_t problems; /* findings that are not warnings: the configuration is refused when > 0 */
};

/*
 * Check `config`, the configuration object (the member TH_SECCONFIG_OBJECT of
 * desired or reported, not the whole desired document). NULL or JSON null is
 * the agents' "no object": every key takes its default, no finding. A key set
 * to null is "removed" (its default), not a finding. Fills *out (previous
 * contents are not freed); TH_ERR_NOMEM leaves *out empty. Never fails on the
 * content of `config`: every defect is a finding.
 */
TH_NODISCARD th_result th_secconfig_check(const cJSON *config, struct th_secconfig_report *out);

/* Free the findings and empty `r`; accepts NULL and an empty report. */
void th_secconfig_report_free(struct th_secconfig_report *r);

/*
 * Parse an ISO 8601 duration as both agents must accept it:
 * P[nY][nM][nW][nD][T[nH][nM][nS]] with whole numbers, month = 30 days, then
 * refuse what either agent refuses (fractions, weeks, years, zero, over
 * TH_SECCONFIG_MAX_DURATION_MS). On success *ms is the length. On failure
 * returns TH_ERR_INVAL and puts the reason, which names the agent when only
 * one refuses, into `why` (may be NULL).
 */
TH_NODISCARD th_result th_secconfig_parse_duration(const char *text, uint64_t *ms, char *why,
                                                   size_t why_size);

/*
 * Whether a desired and a reported value of `key` mean the same to the agents:
 * durations by their length (the C agent reports "PT1H30M" for "PT90M"),
 * priorities ignoring case (the C agent reports "low"), numbers by value,
 * anything else by JSON equality. `desired` and `reported` are the "value"
 * members; NULL means absent (equal only to absent).
 */
bool th_secconfig_values_equal(const struct th_secconfig_key *key, const cJSON *desired,
                               const cJSON *reported);

/*
 * The keys of `desired` (a configuration object) whose value the `reported`
 * object (may be NULL) does not hold, for `twinhub security status`: an
 * array of {"key", "desired": <value>, "reported": <value>} (reported left
 * out when absent), in desired's order. Only keys an agent reads are compared
 * (no agent reports another), and keys set to null are skipped. A desired
 * entry not in the {"value"} form never matches (the agents refuse it): its
 * item has the entry itself as "desired" and "bare": true; so has the one item
 * for a `desired` that is not an object (key TH_SECCONFIG_OBJECT). On success *out owns
 * the array (cJSON_Delete; empty when everything matches); TH_ERR_NOMEM
 * otherwise, *out NULL.
 */
TH_NODISCARD th_result th_secconfig_diff(const cJSON *desired, const cJSON *reported, cJSON **out);

/*
 * The one-word verdict `twinhub security status` and the dashboard show for a module:
 * "not reported" when `reported` is absent or null, "matches" when `diff` (from
 * th_secconfig_diff) is empty, "differs" otherwise. A static string.
 */
const char *th_secconfig_verdict(const cJSON *reported, const cJSON *diff);

#endif
