/*
 * test_scenario.c - unit tests for emulator/scenario/: ISO 8601 durations,
 * record times, matchers (every operator, first-difference paths, captures),
 * ${var} substitution, scenario validation (errors name the JSON path), step
 * lines and JUnit XML.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scenario.h"

/* ---- helpers ---- */

static cJSON *J(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    if (!j)
        fail_msg("bad test JSON: %s", text);
    return j;
}

/* Match text against text; *why gets the mismatch. */
static bool M(const char *matcher, const char *actual, struct th_mismatch *why)
{
    cJSON *m = J(matcher);
    cJSON *a = actual ? J(actual) : NULL;
    bool ok = th_match(m, a, "reported", NULL, why);
    cJSON_Delete(m);
    cJSON_Delete(a);
    return ok;
}

static struct th_scenario *parse(const char *text, struct th_scn_diag *diag)
{
    return th_scenario_parse(text, strlen(text), "t.json", diag);
}

/* The scenario is refused and the diagnostics hold `want`. */
static void assert_refused(const char *text, const char *want)
{
    struct th_scn_diag d = {0};
    struct th_scenario *s = parse(text, &d);
    if (s || !d.text || !strstr(d.text, want))
        fail_msg("expected a refusal with '%s', got: %s", want, d.text ? d.text : "(accepted)");
    th_scenario_free(s);
    th_scn_diag_free(&d);
}

static void assert_accepted(const char *text)
{
    struct th_scn_diag d = {0};
    struct th_scenario *s = parse(text, &d);
    if (!s)
        fail_msg("refused: %s", d.text ? d.text : "?");
    th_scenario_free(s);
    th_scn_diag_free(&d);
}

/* ---- durations ---- */

static void test_th_duration_parse_common_forms_succeeds(void **state)
{
    (void)state;
    int64_t us;
    assert_true(th_duration_parse("PT15S", &us));
    assert_int_equal(us, 15000000);
    assert_true(th_duration_parse("PT0.5S", &us));
    assert_int_equal(us, 500000);
    assert_true(th_duration_parse("PT7M", &us));
    assert_int_equal(us, 7 * 60 * 1000000LL);
    assert_true(th_duration_parse("PT13H", &us));
    assert_int_equal(us, 13 * 3600 * 1000000LL);
    assert_true(th_duration_parse("P1DT2H3M4S", &us));
    assert_int_equal(us, (86400 + 7200 + 180 + 4) * 1000000LL);
    assert_true(th_duration_parse("P2W", &us));
    assert_int_equal(us, 14 * 86400 * 1000000LL);
    assert_true(th_duration_parse("P1M", &us)); /* a month, not a minute */
    assert_int_equal(us, 30 * 86400 * 1000000LL);
    assert_true(th_duration_parse("PT0S", &us));
    assert_int_equal(us, 0);
    assert_true(th_duration_parse("PT1,5S", &us));
    assert_int_equal(us, 1500000);
}

static void test_th_duration_parse_invalid_forms_fails(void **state)
{
    (void)state;
    int64_t us;
    const char *bad[] = {"",     "P",        "PT",     "PT5", "PT500MS", "pt5s",  "5S",    "PT-1S",
                         "P1DT", "PT1.5M2S", "PT1S2M", "P1H", "PTS",     "PT.5S", "PT5S ", "P1Y1Y"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (th_duration_parse(bad[i], &us))
            fail_msg("'%s' was accepted", bad[i]);
}

static void test_th_duration_human_units_succeeds(void **state)
{
    (void)state;
    char b[32];
    th_duration_human(412000, b, sizeof b);
    assert_string_equal(b, "412 ms");
    th_duration_human(35000000, b, sizeof b);
    assert_string_equal(b, "35.0 s");
    th_duration_human(125000000, b, sizeof b);
    assert_string_equal(b, "2 min 5 s");
}

/* ---- matchers ---- */

static void test_th_match_subset_object_succeeds(void **state)
{
    (void)state;
    assert_true(M("{\"a\":1}", "{\"a\":1,\"b\":2}", NULL));
    assert_true(M("{\"a\":{\"b\":\"x\"}}", "{\"a\":{\"b\":\"x\",\"c\":[1]}}", NULL));
    assert_true(M("{\"n\":30}", "{\"n\":30.0}", NULL));           /* numbers by value */
    assert_true(M("{\"$version\":3}", "{\"$version\":3}", NULL)); /* a twin name, not an operator */
}

static void test_th_match_first_difference_path_fails(void **state)
{
    (void)state;
    struct th_mismatch why;
    assert_false(M("{\"ms_iotn:urn\":{\"highPriorityMessageFrequency\":{\"value\":\"PT15S\"}}}",
                   "{\"ms_iotn:urn\":{\"highPriorityMessageFrequency\":{\"value\":\"PT7M\"}}}",
                   &why));
    assert_string_equal(why.path, "reported.ms_iotn:urn.highPriorityMessageFrequency.value");
    assert_string_equal(why.message, "reported.ms_iotn:urn.highPriorityMessageFrequency.value: "
                                     "expected \"PT15S\", got \"PT7M\"");
}

static void test_th_match_missing_member_fails(void **state)
{
    (void)state;
    struct th_mismatch why;
    assert_false(M("{\"a\":1}", "{}", &why));
    assert_string_equal(why.message, "reported.a: expected 1, got nothing (the member is absent)");
}

static void test_th_match_array_element_and_length_fails(void **state)
{
    (void)state;
    struct th_mismatch why;
    assert_true(M("[1,{\"a\":2}]", "[1,{\"a\":2,\"b\":3}]", NULL));
    assert_false(M("{\"x\":[1,2]}", "{\"x\":[1,3]}", &why));
    assert_string_equal(why.path, "reported.x[1]");
    assert_false(M("{\"x\":[1,2]}", "{\"x\":[1]}", &why));
    assert_string_equal(why.message, "reported.x: expected an array of 2 elements, got 1: [1]");
}

static void test_th_match_exact_no_extra_members_fails(void **state)
{
    (void)state;
    struct th_mismatch why;
    assert_true(M("{\"$exact\":{\"a\":{\"b\":1}}}", "{\"a\":{\"b\":1}}", NULL));
    assert_false(M("{\"$exact\":{\"a\":{\"b\":1}}}", "{\"a\":{\"b\":1,\"c\":2}}", &why));
    assert_string_equal(why.path, "reported.a.c");
    assert_non_null(strstr(why.message, "expected no such member ($exact), got 2"));
}

static void test_th_match_regex_search_succeeds(void **state)
{
    (void)state;
    struct th_mismatch why;
    assert_true(M("{\"$regex\":\"[0-9]+\\\\.[0-9]+\"}", "\"v1.22-beta\"", NULL));
    assert_false(M("{\"$regex\":\"^[0-9]+$\"}", "\"12a\"", &why));
    assert_false(M("{\"$regex\":\"x\"}", "5", &why));
    assert_string_equal(why.message, "reported: expected a string matching \"x\", got 5");
}

static void test_th_match_range_bounds_succeeds(void **state)
{
    (void)state;
    assert_true(M("{\"$range\":{\"min\":1,\"max\":3}}", "1", NULL));
    assert_true(M("{\"$range\":{\"min\":1,\"max\":3}}", "3", NULL));
    assert_false(M("{\"$range\":{\"min\":1,\"max\":3}}", "3.5", NULL));
    assert_false(M("{\"$range\":{\"exclusiveMin\":1}}", "1", NULL));
    assert_true(M("{\"$range\":{\"exclusiveMax\":1}}", "0.99", NULL));
    assert_false(M("{\"$range\":{\"min\":0}}", "\"5\"", NULL));
}

static void test_th_match_present_absent_succeeds(void **state)
{
    (void)state;
    struct th_mismatch why;
    assert_true(M("{\"a\":{\"$present\":true}}", "{\"a\":null}", NULL));
    assert_false(M("{\"a\":{\"$present\":true}}", "{}", &why));
    assert_true(M("{\"a\":{\"$absent\":true}}", "{}", NULL));
    assert_false(M("{\"a\":{\"$absent\":true}}", "{\"a\":1}", &why));
    assert_string_equal(why.message, "reported.a: expected the member to be absent, got 1");
}

static void test_th_match_type_names_succeeds(void **state)
{
    (void)state;
    assert_true(M("{\"$type\":\"integer\"}", "3", NULL));
    assert_false(M("{\"$type\":\"integer\"}", "3.5", NULL));
    assert_true(M("{\"$type\":\"number\"}", "3", NULL));
    assert_true(M("{\"$type\":\"null\"}", "null", NULL));
    assert_true(M("{\"$type\":\"array\"}", "[]", NULL));
    assert_true(M("{\"$type\":\"object\"}", "{}", NULL));
    assert_true(M("{\"$type\":\"boolean\"}", "false", NULL));
    assert_false(M("{\"$type\":\"string\"}", "1", NULL));
}

static void test_th_match_duration_bounds_succeeds(void **state)
{
    (void)state;
    assert_true(M("{\"$duration\":true}", "\"PT7M\"", NULL));
    assert_false(M("{\"$duration\":true}", "\"7 minutes\"", NULL));
    assert_true(M("{\"$duration\":{\"min\":\"PT1M\",\"max\":\"PT1H\"}}", "\"PT7M\"", NULL));
    assert_false(M("{\"$duration\":{\"min\":\"PT1M\"}}", "\"PT15S\"", NULL));
}

static void test_th_match_anyof_not_contains_succeeds(void **state)
{
    (void)state;
    struct th_mismatch why;
    assert_true(M("{\"$anyOf\":[1,\"one\"]}", "\"one\"", NULL));
    assert_false(M("{\"$anyOf\":[1,\"one\"]}", "2", &why));
    assert_string_equal(why.message, "reported: expected any of [1,\"one\"], got 2");
    assert_true(M("{\"$not\":{\"$regex\":\"^err\"}}", "\"ok\"", NULL));
    assert_false(M("{\"$not\":5}", "5", NULL));
    assert_true(M("{\"a\":{\"$not\":5}}", "{}", NULL)); /* absent is not 5 */
    assert_true(
        M("{\"$contains\":{\"id\":\"b\"}}", "[{\"id\":\"a\"},{\"id\":\"b\",\"x\":1}]", NULL));
    assert_false(M("{\"$contains\":{\"id\":\"c\"}}", "[{\"id\":\"a\"}]", NULL));
}

static void test_th_match_capture_stores_strings_succeeds(void **state)
{
    (void)state;
    cJSON *caps = cJSON_CreateObject();
    cJSON *m =
        J("{\"fw\":{\"$capture\":\"fw\"},\"cfg\":{\"$capture\":\"cfg\",\"match\":{\"n\":1}}}");
    cJSON *a = J("{\"fw\":\"1.2.3\",\"cfg\":{\"n\":1}}");
    assert_true(th_match(m, a, "reported", caps, NULL));
    assert_string_equal(cJSON_GetObjectItem(caps, "fw")->valuestring, "1.2.3");
    assert_string_equal(cJSON_GetObjectItem(caps, "cfg")->valuestring, "{\"n\":1}");
    cJSON_Delete(m);
    cJSON_Delete(a);
    cJSON_Delete(caps);
}

static void test_th_match_capture_kept_only_on_success_fails(void **state)
{
    (void)state;
    cJSON *caps = cJSON_CreateObject();
    cJSON *m = J("{\"fw\":{\"$capture\":\"fw\"},\"n\":2}");
    cJSON *a = J("{\"fw\":\"1.2.3\",\"n\":1}");
    assert_false(th_match(m, a, "reported", caps, NULL));
    assert_null(cJSON_GetObjectItem(caps, "fw"));
    cJSON_Delete(m);
    /* a failed $anyOf branch leaves no capture behind */
    m = J("{\"$anyOf\":[{\"fw\":{\"$capture\":\"x\"},\"n\":5},{\"n\":1}]}");
    assert_true(th_match(m, a, "reported", caps, NULL));
    assert_null(cJSON_GetObjectItem(caps, "x"));
    cJSON_Delete(m);
    cJSON_Delete(a);
    cJSON_Delete(caps);
}

static void test_th_matcher_validate_bad_operands_fails(void **state)
{
    (void)state;
    const char *bad[][2] = {
        {"{\"a\":{\"$regex\":\"([\"}}", "m.a.$regex: not a POSIX extended regular expression"},
        {"{\"$range\":{\"low\":1}}", "m.$range.low: unknown member"},
        {"{\"$type\":\"int\"}", "m.$type: expected one of"},
        {"{\"$duration\":{\"min\":\"5s\"}}", "m.$duration.min: expected an ISO 8601 duration"},
        {"{\"$anyOf\":[]}", "m.$anyOf: expected a non-empty array"},
        {"{\"$capture\":\"1x\"}", "m.$capture: expected a variable name"},
        {"{\"$foo\":1}", "m.$foo: unknown operator '$foo'"},
        {"{\"$regex\":\"a\",\"b\":1}", "m.b: an operator object holds only its operator"},
        {"{\"$present\":\"yes\"}", "m.$present: expected true or false"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct th_scn_diag d = {0};
        cJSON *m = J(bad[i][0]);
        assert_false(th_matcher_validate(m, "f", "m", &d, NULL, NULL));
        if (!d.text || !strstr(d.text, bad[i][1]))
            fail_msg("%s: expected '%s', got %s", bad[i][0], bad[i][1], d.text ? d.text : "-");
        cJSON_Delete(m);
        th_scn_diag_free(&d);
    }
}

/*
 * Found by fuzz_scenario (a timeout): glibc's regcomp took 2.7 s for "^[0-9]+" followed by 111
 * '*' and 70 s for 222, on every th_match; nested counts such as ((a{1,100}){1,100}){1,100}
 * explode too, and so does regexec with back-references. Such patterns are refused, at
 * validation and when a ${...} resolves to one.
 */
static void test_th_matcher_validate_costly_regex_fails(void **state)
{
    (void)state;
    char stars[300] = "^[0-9]+";
    memset(stars + 7, '*', 222);
    stars[229] = '\0';
    char longp[1100];
    memset(longp, 'a', 1001);
    longp[1001] = '\0';
    const char *bad[][2] = {
        {stars, "two repetition operators in a row at character 8"},
        {"a+?", "two repetition operators in a row"},
        {"(ab)*{2}", "two repetition operators in a row"},
        {"((a{1,100}){1,100}){1,100}", "repetition counts multiply to more than 1000"},
        {"(x{2,}){600}", "repetition counts multiply to more than 1000"},
        {"a{1001}", "repetition counts multiply to more than 1000"},
        /* found by fuzz_scenario (out of memory in regcomp): glibc reads "{,n}" as "{0,n}" */
        {"((a{,1010})x){0,100}", "repetition counts multiply to more than 1000"},
        {"((a{,100})x){,100}", "repetition counts multiply to more than 1000"},
        {longp, "longer than 1000 characters"},
        /* regexec with back-references: minutes on 120 'a's */
        {"(a*)(a*)(a*)\\3\\2\\1c", "back-reference \\3 at character 13"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "$regex", bad[i][0]);
        struct th_scn_diag d = {0};
        assert_false(th_matcher_validate(m, "f", "m", &d, NULL, NULL));
        if (!d.text || !strstr(d.text, "m.$regex: not a usable regular expression: ") ||
            !strstr(d.text, bad[i][1]))
            fail_msg("%.40s: expected '%s', got %s", bad[i][0], bad[i][1], d.text ? d.text : "-");
        th_scn_diag_free(&d);
        /* th_match refuses to compile it as well (the pattern may come from a ${...}). */
        cJSON *a = cJSON_CreateString("123.4");
        struct th_mismatch why;
        assert_false(th_match(m, a, "reported", NULL, &why));
        assert_non_null(strstr(why.message, "is not a valid regular expression"));
        cJSON_Delete(a);
        cJSON_Delete(m);
    }
    /* What scenarios write stays valid: brackets, escapes, groups, one count per atom. */
    const char *good[] = {"^[0-9]+\\.[0-9]+\\.[0-9]+$", "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$",
                          "[]*+?{}]+", "[[:digit:]]{4}-[0-9]{2}", "a{1000}", "(a|b)*c?d+",
                          "\\*\\*", "x{,3}", "(((a{1,10}){1,10}){1,10})"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "$regex", good[i]);
        struct th_scn_diag d = {0};
        if (!th_matcher_validate(m, "f", "m", &d, NULL, NULL))
            fail_msg("%s refused: %s", good[i], d.text ? d.text : "-");
        th_scn_diag_free(&d);
        cJSON_Delete(m);
    }
}

static void test_th_matcher_validate_twin_and_wire_names_succeeds(void **state)
{
    (void)state;
    cJSON *m = J("{\"$version\":2,\"$metadata\":{},\"systemProperties\":{\"$.x\":\"1\"}}");
    assert_true(th_matcher_validate(m, "f", "m", NULL, NULL, NULL));
    cJSON_Delete(m);
}

/* ---- variables ---- */

static void test_th_vars_subst_string_names_and_escape_succeeds(void **state)
{
    (void)state;
    cJSON *vars = J("{\"a\":\"A\",\"hub.name\":\"h.example\"}");
    char unknown[64];
    char *s = th_vars_subst_string("x${a}y ${hub.name} $${a} $5", vars, unknown, sizeof unknown);
    assert_string_equal(s, "xAy h.example ${a} $5");
    free(s);
    assert_null(th_vars_subst_string("${b}", vars, unknown, sizeof unknown));
    assert_string_equal(unknown, "b");
    cJSON *in = J("{\"k\":[\"${a}\",1,{\"${a}\":\"${a}\"}]}");
    cJSON *out = th_vars_subst(in, vars, unknown, sizeof unknown);
    char *text = cJSON_PrintUnformatted(out);
    assert_string_equal(text, "{\"k\":[\"A\",1,{\"${a}\":\"A\"}]}"); /* keys are kept */
    free(text);
    cJSON_Delete(in);
    cJSON_Delete(out);
    cJSON_Delete(vars);
}

static void test_th_vars_is_run_var_patterns_succeeds(void **state)
{
    (void)state;
    assert_true(th_vars_is_run_var("hub.caFile"));
    assert_true(th_vars_is_run_var("device.sensor.1.connectionString"));
    assert_true(th_vars_is_run_var("device.d.primaryKey"));
    assert_true(th_vars_is_run_var("module.d.m.connectionString"));
    assert_false(th_vars_is_run_var("module.d.connectionString"));
    assert_false(th_vars_is_run_var("device..connectionString"));
    assert_false(th_vars_is_run_var("hub.key"));
    assert_false(th_vars_is_run_var("fw"));
}

static void test_th_vars_scan_unterminated_fails(void **state)
{
    (void)state;
    size_t bad = 0;
    assert_false(th_vars_scan("ab${x", NULL, NULL, &bad));
    assert_int_equal(bad, 2);
    assert_false(th_vars_scan("${}", NULL, NULL, &bad));
    assert_true(th_vars_scan("$${x", NULL, NULL, &bad));
}

/* ---- scenarios ---- */

static void test_th_scenario_parse_minimal_succeeds(void **state)
{
    (void)state;
    struct th_scn_diag d = {0};
    struct th_scenario *s =
        parse("{\"name\":\"n\",\"defaults\":{\"within\":\"PT3S\"},\"steps\":["
              "{\"waitConnected\":{\"deviceId\":\"d\"}},"
              "{\"name\":\"t\",\"expectTelemetry\":{\"deviceId\":\"d\",\"count\":2}},"
              "{\"expectTelemetry\":{\"deviceId\":\"d\",\"since\":\"t\",\"count\":{\"max\":4}}},"
              "{\"expectNoReported\":{\"deviceId\":\"d\",\"during\":\"PT0.5S\"}},"
              "{\"restartHub\":true}]}",
              &d);
    assert_non_null(s);
    assert_string_equal(s->name, "n");
    assert_int_equal(s->nsteps, 5);
    assert_string_equal(s->steps[0].name, "waitConnected 1");
    assert_int_equal(s->steps[0].bound_us, 3000000);
    assert_int_equal(s->steps[1].count_min, 2);
    assert_int_equal(s->steps[1].count_max, 2);
    assert_int_equal(s->steps[2].since, 1);
    assert_int_equal(s->steps[2].count_min, 0);
    assert_int_equal(s->steps[2].count_max, 4);
    assert_int_equal(s->steps[3].bound_us, 500000);
    assert_int_equal(s->steps[4].kind, TH_STEP_RESTART_HUB);
    assert_int_equal(th_step_kind_class(s->steps[4].kind), TH_STEP_CLASS_FAULT);
    th_scenario_free(s);
    th_scn_diag_free(&d);
}

static void test_th_scenario_parse_errors_name_paths_fails(void **state)
{
    (void)state;
    assert_refused("{\"steps\":[{\"sleep\":{\"for\":\"PT1S\"}}]}", "t.json: name: required");
    assert_refused("{\"name\":\"n\",\"steps\":[]}", "t.json: steps: expected a non-empty array");
    /* a value the hub would get cut at the NUL (docs/protocol.md, "U+0000 in strings") */
    assert_refused("{\"name\":\"n\",\"steps\":[{\"patchDesired\":{\"deviceId\":\"d\","
                   "\"patch\":{\"s\":\"a\\u0000b\"}}}]}",
                   "\\u0000 in the string value at 'steps[0].patchDesired.patch.s'");
    assert_refused("{\"name\":\"n\",\"stesp\":[]}",
                   "stesp: unknown member; did you mean \"steps\"?");
    assert_refused("{\"name\":\"n\",\"steps\":[{\"sleep\":{\"for\":\"PT0S\"}}]}",
                   "steps[0].sleep.for: expected a duration longer than zero");
    assert_refused(
        "{\"name\":\"n\",\"steps\":[{\"expectReported\":{\"deviceId\":\"d\",\"mtch\":{}}}]}",
        "steps[0].expectReported.mtch: unknown member; did you mean \"match\"?");
    assert_refused("{\"name\":\"n\",\"steps\":[{\"expectReported\":{\"deviceId\":\"d\"}}]}",
                   "steps[0].expectReported.match: required");
    assert_refused("{\"name\":\"n\",\"steps\":[{\"expectReported\":{\"match\":{}}}]}",
                   "steps[0].expectReported.deviceId: required");
    assert_refused(
        "{\"name\":\"n\",\"steps\":[{\"sendC2D\":{\"deviceId\":\"d\",\"moduleId\":\"m\"}}]}",
        "steps[0].sendC2D.moduleId: unknown member");
    assert_refused("{\"name\":\"n\",\"steps\":[{\"sendC2D\":{\"deviceId\":\"d\",\"body\":\"a\","
                   "\"bodyJson\":1}}]}",
                   "steps[0].sendC2D: give either body (a string) or bodyJson");
    assert_refused("{\"name\":\"n\",\"steps\":[{\"injectError\":{\"deviceId\":\"d\",\"operation\":"
                   "\"twinPut\"}}]}",
                   "steps[0].injectError.operation: expected \"twinGet\" or \"twinPatch\"");
    assert_refused("{\"name\":\"n\",\"steps\":[{\"injectError\":{\"deviceId\":\"d\",\"operation\":"
                   "\"twinGet\",\"status\":200}}]}",
                   "steps[0].injectError.status: expected an integer from 400 to 599");
    assert_refused(
        "{\"name\":\"n\",\"steps\":[{\"invokeMethod\":{\"deviceId\":\"d\",\"methodName\":\"m\","
        "\"expect\":{\"status\":200,\"error\":\"x\"}}}]}",
        "steps[0].invokeMethod.expect: expect either an answer");
    assert_refused(
        "{\"name\":\"n\",\"steps\":[{\"waitConnected\":{\"deviceId\":\"d\"},\"sleep\":{\"for\":"
        "\"PT1S\"}}]}",
        "steps[0]: a step holds exactly one step kind; this one has waitConnected and sleep");
    assert_refused("{\"name\":\"n\",\"steps\":[{\"expectTelemetry\":{\"deviceId\":\"d\",\"count\":{"
                   "\"min\":3,\"max\":1}}}]}",
                   "steps[0].expectTelemetry.count: min is larger than max");
    assert_refused("{\"name\":\"n\",\"registry\":{},\"registryFile\":\"r.json\",\"steps\":[{"
                   "\"restartHub\":{}}]}",
                   "registryFile: give either registry or registryFile");
    assert_refused(
        "{\"name\":\"n\",\"registryFile\":\"/nonexistent/r.json\",\"steps\":[{\"restartHub\":{}}]}",
        "registryFile: cannot read /nonexistent/r.json");
    assert_refused("{\"name\":\"n\",\"agent\":{\"command\":\"x\",\"startAt\":\"nope\"},\"steps\":[{"
                   "\"restartHub\":{}}]}",
                   "agent.startAt: no step is named \"nope\"");
    assert_refused("{\"name\":\"n\",\"agent\":{\"comand\":\"x\"},\"steps\":[{\"restartHub\":{}}]}",
                   "agent.comand: unknown member; did you mean \"command\"?");
    assert_refused("{\"name\":\"n\",\"variables\":{\"a.b\":\"1\"},\"steps\":[{\"restartHub\":{}}]}",
                   "variables.a.b: not a variable name");
    assert_refused("{\"name\":\"n\",\"steps\":[{\"patchDesired\":{\"deviceId\":\"d\",\"patch\":{"
                   "\"a\":\"${x\"}}}]}",
                   "steps[0].patchDesired.patch.a: \"${\" at character 1 has no closing");
    assert_refused("{\"name\":\"n\",\n\"steps\": [1,]}",
                   "t.json: line 2, column 13: not valid JSON");
}

static void test_th_scenario_parse_variables_and_captures_succeeds(void **state)
{
    (void)state;
    /* scenario variables, run variables and captures of earlier steps are known */
    assert_accepted(
        "{\"name\":\"n\",\"variables\":{\"v\":\"${hub.name}\"},"
        "\"agent\":{\"command\":\"a ${v} ${device.d.connectionString}\"},\"steps\":["
        "{\"expectReported\":{\"deviceId\":\"d\",\"match\":{\"x\":{\"$capture\":\"c\"}}}},"
        "{\"patchDesired\":{\"deviceId\":\"${v}\",\"patch\":{\"y\":\"${c} $${lit}\"}}}]}");
    /* a capture is not usable in its own step */
    assert_refused(
        "{\"name\":\"n\",\"steps\":["
        "{\"expectReported\":{\"deviceId\":\"${c}\",\"match\":{\"x\":{\"$capture\":\"c\"}}}}]}",
        "steps[0].expectReported.deviceId: unknown variable ${c}");
    /* nor by an agent that starts before the capturing step */
    assert_refused(
        "{\"name\":\"n\",\"agent\":{\"command\":\"a ${c}\"},\"steps\":["
        "{\"expectReported\":{\"deviceId\":\"d\",\"match\":{\"x\":{\"$capture\":\"c\"}}}}]}",
        "agent.command: unknown variable ${c}");
    assert_accepted(
        "{\"name\":\"n\",\"agent\":{\"command\":\"a ${c}\",\"startAt\":\"go\"},\"steps\":["
        "{\"expectReported\":{\"deviceId\":\"d\",\"match\":{\"x\":{\"$capture\":\"c\"}}}},"
        "{\"name\":\"go\",\"sleep\":{\"for\":\"PT1S\"}}]}");
}

/* Found by fuzz_scenario: 1e30 as an integer field was converted to long long unchecked
 * (undefined behaviour); numbers past 2^53 are not integers a scenario can use. */
static void test_th_scenario_parse_huge_integers_fails(void **state)
{
    (void)state;
    assert_refused("{\"name\":\"n\",\"steps\":[{\"invokeMethod\":{\"deviceId\":\"d\","
                   "\"methodName\":\"m\",\"responseTimeoutInSeconds\":1e30}}]}",
                   "responseTimeoutInSeconds: expected an integer from 5 to 300");
    assert_refused("{\"name\":\"n\",\"steps\":[{\"expectTelemetry\":{\"deviceId\":\"d\","
                   "\"count\":9223372036854775808}}]}",
                   "count: expected a number of messages");
    assert_refused("{\"name\":\"n\",\"steps\":[{\"expectTelemetry\":{\"deviceId\":\"d\","
                   "\"count\":{\"min\":-1e300}}}]}",
                   "count.min: expected an integer >= 0");
}

static void test_th_scenario_parse_registry_errors_name_paths_fails(void **state)
{
    (void)state;
    assert_refused("{\"name\":\"n\",\"registry\":{\"devices\":[{\"deviceId\":\"ok\"},"
                   "{\"deviceId\":\"d\",\"modules\":[{\"moduleId\":\"a b\"}]}]},"
                   "\"steps\":[{\"restartHub\":{}}]}",
                   "t.json: registry.devices[1].modules[0].moduleId:");
    assert_refused("{\"name\":\"n\",\"registry\":{\"device\":[]},\"steps\":[{\"restartHub\":{}}]}",
                   "t.json: registry");
}

/* th_scenario_parse_ex's reader: it gets the joined path; NULL + errno is reported. */
static char *serve_registry(const char *path, size_t max, size_t *len, void *arg)
{
    const char *text = "{\"devices\":[{\"deviceId\":\"from-reader\"}]}";
    *(int *)arg += 1;
    assert_int_equal(max, TH_SCN_MAX_FILE_BYTES);
    if (strcmp(path, "dir/reg.json") != 0) {
        errno = ENOENT;
        return NULL;
    }
    *len = strlen(text);
    return strdup(text);
}

static void test_th_scenario_parse_ex_reader_serves_files_succeeds(void **state)
{
    (void)state;
    int calls = 0;
    struct th_scn_parse_opts opts = {serve_registry, &calls};
    struct th_scn_diag d = {0};
    const char *text = "{\"name\":\"n\",\"registryFile\":\"reg.json\","
                       "\"steps\":[{\"restartHub\":{}}]}";
    struct th_scenario *s = th_scenario_parse_ex(text, strlen(text), "dir/s.json", &opts, &d);
    assert_non_null(s);
    assert_int_equal(calls, 1);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(s->registry, "devices"), 0)
                            ->child->valuestring,
                        "from-reader");
    th_scenario_free(s);
    /* A refused file is an error naming the path, and the disk is not read instead. */
    text = "{\"name\":\"n\",\"registryFile\":\"/dev/stdin\",\"steps\":[{\"restartHub\":{}}]}";
    s = th_scenario_parse_ex(text, strlen(text), "dir/s.json", &opts, &d);
    assert_null(s);
    assert_int_equal(calls, 2);
    assert_non_null(strstr(d.text, "registryFile: cannot read /dev/stdin: No such file"));
    th_scn_diag_free(&d);
}

static void test_th_scenario_identities_lists_each_once_succeeds(void **state)
{
    (void)state;
    struct th_scn_diag d = {0};
    struct th_scenario *s = parse("{\"name\":\"n\",\"registry\":{\"devices\":[{\"deviceId\":\"a\","
                                  "\"modules\":[{\"moduleId\":\"m\"}]}]},"
                                  "\"steps\":[{\"waitConnected\":{\"deviceId\":\"a\"}},{"
                                  "\"waitConnected\":{\"deviceId\":\"b\"}},"
                                  "{\"waitConnected\":{\"deviceId\":\"a\",\"moduleId\":\"m\"}},"
                                  "{\"waitConnected\":{\"deviceId\":\"${hub.name}\"}}]}",
                                  &d);
    assert_non_null(s);
    cJSON *ids = th_scenario_identities(s);
    char *text = cJSON_PrintUnformatted(ids);
    assert_string_equal(text, "[{\"deviceId\":\"a\"},{\"deviceId\":\"a\",\"moduleId\":\"m\"},"
                              "{\"deviceId\":\"b\"}]");
    free(text);
    cJSON_Delete(ids);
    th_scenario_free(s);
    th_scn_diag_free(&d);
}

/* ---- reports ---- */

static void test_th_scn_format_line_verdicts_succeeds(void **state)
{
    (void)state;
    struct th_step st = {.index = 3, .name = "acknowledges it"};
    struct th_step_result r = {.verdict = TH_VERDICT_PASS, .start_us = 1000000, .end_us = 1412000};
    char line[256];
    th_scn_format_line(&st, &r, line, sizeof line);
    assert_string_equal(line, "PASS  3 acknowledges it (412 ms)");
    r.verdict = TH_VERDICT_FAIL;
    r.end_us = 36000000;
    r.message = "expected 1, got 2";
    th_scn_format_line(&st, &r, line, sizeof line);
    assert_string_equal(line, "FAIL  3 acknowledges it (35.0 s): expected 1, got 2");
    r.verdict = TH_VERDICT_SKIP;
    th_scn_format_line(&st, &r, line, sizeof line);
    assert_string_equal(line, "SKIP  3 acknowledges it");
}

static void test_th_junit_render_escapes_and_counts_succeeds(void **state)
{
    (void)state;
    struct th_junit_case cases[] = {
        {"ok step", 0.5, TH_VERDICT_PASS, NULL, NULL},
        {"bad <step> & \"quotes\"", 1.25, TH_VERDICT_FAIL, "expected \"a\" < got\nnext",
         "detail & more\x01"},
        {"later", 0, TH_VERDICT_SKIP, NULL, NULL},
    };
    struct th_junit_suite suite = {.name = "s",
                                   .file = "f.json",
                                   .timestamp = "2026-01-01T00:00:00Z",
                                   .time_s = 2,
                                   .cases = cases,
                                   .ncases = 3};
    char *xml = th_junit_render(&suite, 1);
    assert_non_null(xml);
    assert_non_null(strstr(
        xml, "<testsuites name=\"twinhub\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""));
    assert_non_null(strstr(xml, "<testcase name=\"ok step\" classname=\"s\" time=\"0.500\"/>"));
    assert_non_null(strstr(xml, "<testcase name=\"bad &lt;step&gt; &amp; &quot;quotes&quot;\""));
    assert_non_null(strstr(xml, "<failure message=\"expected &quot;a&quot; &lt; got&#10;next\""));
    assert_non_null(strstr(xml, "detail &amp; more?</failure>"));
    assert_non_null(strstr(xml, "<skipped/>"));
    free(xml);
}

static void test_th_junit_render_hub_error_succeeds(void **state)
{
    (void)state;
    struct th_junit_suite suite = {.name = "s", .error = "the hub could not be started"};
    char *xml = th_junit_render(&suite, 1);
    assert_non_null(strstr(xml, "errors=\"1\""));
    assert_non_null(strstr(xml, "<error message=\"the hub could not be started\"/>"));
    free(xml);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_duration_parse_common_forms_succeeds),
        cmocka_unit_test(test_th_duration_parse_invalid_forms_fails),
        cmocka_unit_test(test_th_duration_human_units_succeeds),
        cmocka_unit_test(test_th_match_subset_object_succeeds),
        cmocka_unit_test(test_th_match_first_difference_path_fails),
        cmocka_unit_test(test_th_match_missing_member_fails),
        cmocka_unit_test(test_th_match_array_element_and_length_fails),
        cmocka_unit_test(test_th_match_exact_no_extra_members_fails),
        cmocka_unit_test(test_th_match_regex_search_succeeds),
        cmocka_unit_test(test_th_match_range_bounds_succeeds),
        cmocka_unit_test(test_th_match_present_absent_succeeds),
        cmocka_unit_test(test_th_match_type_names_succeeds),
        cmocka_unit_test(test_th_match_duration_bounds_succeeds),
        cmocka_unit_test(test_th_match_anyof_not_contains_succeeds),
        cmocka_unit_test(test_th_match_capture_stores_strings_succeeds),
        cmocka_unit_test(test_th_match_capture_kept_only_on_success_fails),
        cmocka_unit_test(test_th_matcher_validate_bad_operands_fails),
        cmocka_unit_test(test_th_matcher_validate_costly_regex_fails),
        cmocka_unit_test(test_th_matcher_validate_twin_and_wire_names_succeeds),
        cmocka_unit_test(test_th_vars_subst_string_names_and_escape_succeeds),
        cmocka_unit_test(test_th_vars_is_run_var_patterns_succeeds),
        cmocka_unit_test(test_th_vars_scan_unterminated_fails),
        cmocka_unit_test(test_th_scenario_parse_minimal_succeeds),
        cmocka_unit_test(test_th_scenario_parse_errors_name_paths_fails),
        cmocka_unit_test(test_th_scenario_parse_variables_and_captures_succeeds),
        cmocka_unit_test(test_th_scenario_parse_huge_integers_fails),
        cmocka_unit_test(test_th_scenario_parse_registry_errors_name_paths_fails),
        cmocka_unit_test(test_th_scenario_parse_ex_reader_serves_files_succeeds),
        cmocka_unit_test(test_th_scenario_identities_lists_each_once_succeeds),
        cmocka_unit_test(test_th_scn_format_line_verdicts_succeeds),
        cmocka_unit_test(test_th_junit_render_escapes_and_counts_succeeds),
        cmocka_unit_test(test_th_junit_render_hub_error_succeeds),
    };
    return cmocka_run_group_tests_name("scenario", tests, NULL, NULL);
}
