/*
 * test_scenario_docs.c - the runner's validation (emulator/scenario/scn_parse.c)
 * accepts every shipped scenario (scenarios/), every scenario of the runner's
 * tests (tests/scenario/) and every complete scenario example in
 * docs/scenarios.md, and refuses every file of tests/scenario/invalid/ with a
 * message that names the file and a JSON path. TH_SOURCE_DIR is the source root.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scenario.h"

static const char *root(void)
{
    const char *r = getenv("TH_SOURCE_DIR");
    if (!r)
        fail_msg("TH_SOURCE_DIR is not set (meson test sets it)");
    return r;
}

/* Call fn for every *.json file directly in dir; returns how many. */
static int each_json(const char *dir, void (*fn)(const char *path))
{
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s", dir);
    int n = 0;
    struct dirent *e;
    char **names = NULL;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len > 5 && !strcmp(e->d_name + len - 5, ".json")) {
            names = realloc(names, (size_t)(n + 1) * sizeof *names);
            if (asprintf(&names[n], "%s/%s", dir, e->d_name) < 0)
                fail_msg("out of memory");
            n++;
        }
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        fn(names[i]);
        free(names[i]);
    }
    free(names);
    return n;
}

static void must_accept(const char *path)
{
    struct th_scn_diag d = {0};
    struct th_scenario *s = th_scenario_load(path, &d);
    if (!s)
        fail_msg("%s is refused:\n%s", path, d.text ? d.text : "?");
    th_scenario_free(s);
    th_scn_diag_free(&d);
}

static void must_refuse(const char *path)
{
    struct th_scn_diag d = {0};
    struct th_scenario *s = th_scenario_load(path, &d);
    if (s)
        fail_msg("%s is accepted", path);
    /* "FILE: PATH: message" or, for a file that is not JSON, "FILE: line L, column C: ..." */
    char prefix[4200];
    snprintf(prefix, sizeof prefix, "%s: ", path);
    if (!d.text || strncmp(d.text, prefix, strlen(prefix)) != 0 ||
        !strstr(d.text + strlen(prefix), ": "))
        fail_msg("%s: the message does not name the file and a path: %s", path,
                 d.text ? d.text : "-");
    th_scn_diag_free(&d);
}

static void test_shipped_scenarios_validate_succeeds(void **state)
{
    (void)state;
    char dir[4096];
    int n = 0;
    static const char *const suites[] = {"scenarios/device-agent", "scenarios/security-module",
                                         "scenarios/dps-agent"};
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++) {
        snprintf(dir, sizeof dir, "%s/%s", root(), suites[i]);
        DIR *d = opendir(dir);
        if (!d)
            continue; /* a suite that is not shipped yet */
        closedir(d);
        n += each_json(dir, must_accept);
    }
    printf("# %d shipped scenarios validate\n", n);
}

static void test_runner_test_scenarios_validate_succeeds(void **state)
{
    (void)state;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/scenario", root());
    int n = each_json(dir, must_accept);
    assert_true(n >= 5);
}

static void test_invalid_scenarios_refused_with_path_fails(void **state)
{
    (void)state;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/scenario/invalid", root());
    int n = each_json(dir, must_refuse);
    assert_true(n >= 10);
}

/* Every ```json block of docs/scenarios.md that is a whole scenario validates. */
static void test_docs_examples_validate_succeeds(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/docs/scenarios.md", root());
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot read %s", path);
    char *line = NULL;
    size_t cap = 0;
    char *block = NULL;
    size_t len = 0;
    bool in = false;
    int examples = 0, lineno = 0, start = 0;
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        if (!in && !strncmp(line, "```json", 7)) {
            in = true;
            len = 0;
            start = lineno + 1;
            continue;
        }
        if (in && !strncmp(line, "```", 3)) {
            in = false;
            cJSON *j = cJSON_ParseWithLength(block ? block : "", len);
            if (cJSON_IsObject(j) && cJSON_GetObjectItem(j, "steps") &&
                cJSON_GetObjectItem(j, "name")) {
                struct th_scn_diag d = {0};
                char name[4200];
                snprintf(name, sizeof name, "%s:%d", path, start);
                struct th_scenario *s = th_scenario_parse(block, len, name, &d);
                if (!s)
                    fail_msg("the example at %s is refused:\n%s", name, d.text ? d.text : "?");
                th_scenario_free(s);
                th_scn_diag_free(&d);
                examples++;
            }
            cJSON_Delete(j);
            continue;
        }
        if (in) {
            size_t l = strlen(line);
            block = realloc(block, len + l + 1);
            memcpy(block + len, line, l + 1);
            len += l;
        }
    }
    free(line);
    free(block);
    fclose(f);
    printf("# %d examples in docs/scenarios.md validate\n", examples);
    assert_true(examples >= 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_scenarios_validate_succeeds),
        cmocka_unit_test(test_runner_test_scenarios_validate_succeeds),
        cmocka_unit_test(test_invalid_scenarios_refused_with_path_fails),
        cmocka_unit_test(test_docs_examples_validate_succeeds),
    };
    return cmocka_run_group_tests_name("scenario_docs", tests, NULL, NULL);
}
