/*
 * test_memory.c - heap cost of a twin and of a registry identity, measured
 * with glibc's mallinfo2 (docs/performance.md, "Memory per device").
 *
 * The content is the scale benchmark's (tests/bench/bench_scale.c and
 * procs.c thb_write_registry): a device loaded from a registry document with
 * a tag and 11 desired settings (~540 B by the hub's size rule), then one
 * ~480 B reported patch (firmware.version and 11 config strings). Measured on
 * x86-64, glibc 2.36, cJSON 1.7.15: 3,779 B per twin and 4,380 B per identity
 * (2,700 B right after loading) with the compact $metadata and shared
 * property names of twin_meta.c; with $metadata as cJSON trees it was 13,506 B
 * and 14,156 B. The bounds leave about 15 % of margin: they catch a
 * regression to per-property $metadata objects or copied names, not small
 * drifts.
 *
 * Not measured where mallinfo2 is not available or the heap is not glibc's (valgrind's or a
 * sanitizer's allocator): the whole test then reports itself skipped ("1..0 # SKIP"), never
 * passed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
#define HAVE_MALLINFO2 1
#else
#define HAVE_MALLINFO2 0
#endif

#include "registry.h"
#include "twin.h"

#define NOW 1594302950797698LL
#define COUNT 1000

/* Upper bounds per twin / per identity, in bytes (see the header comment). */
#define MAX_TWIN_BYTES 4400
#define MAX_IDENTITY_BYTES 5100

static size_t heap_in_use(void)
{
#if HAVE_MALLINFO2
    return mallinfo2().uordblks;
#else
    return 0;
#endif
}

/* False when the heap in use does not move with malloc (not glibc's allocator). */
static bool heap_measurable(void)
{
    size_t before = heap_in_use();
    void *p = malloc(4096);
    size_t after = heap_in_use();
    free(p);
    return p != NULL && after >= before + 4096;
}

static void desired_text(int i, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "{\"config\":{");
    for (int k = 0, used = 0; used < 500; k++, used += 49)
        n += (size_t)snprintf(buf + n, size - n,
                              "%s\"setting%02d\":\"value-%05d-%02d-abcdefghijklmnopqrstuvwxyz\"",
                              k ? "," : "", k, i, k);
    snprintf(buf + n, size - n, "}}");
}

static cJSON *reported_patch(int i)
{
    char buf[1024];
    size_t n = (size_t)snprintf(buf, sizeof buf,
                                "{\"firmware\":{\"version\":\"1.4.%d\"},\"config\":{", i % 100);
    for (int k = 0; k < 11; k++)
        n += (size_t)snprintf(buf + n, sizeof buf - n,
                              "%s\"applied%02d\":\"state-%05d-%02d-0123456789\"", k ? "," : "", k,
                              i, k);
    snprintf(buf + n, sizeof buf - n, "}}");
    cJSON *patch = cJSON_Parse(buf);
    assert_non_null(patch);
    return patch;
}

static void test_twin_heap_per_twin_within_bound(void **state)
{
    (void)state;
    static struct th_twin *twins[COUNT];
    char text[1024];
    cJSON *desired[COUNT], *reported[COUNT];
    for (int i = 0; i < COUNT; i++) {
        desired_text(i, text, sizeof text);
        desired[i] = cJSON_Parse(text);
        assert_non_null(desired[i]);
        reported[i] = reported_patch(i);
    }

    size_t before = heap_in_use();
    for (int i = 0; i < COUNT; i++) {
        struct th_error err = {0};
        twins[i] = th_twin_new(NOW);
        assert_non_null(twins[i]);
        assert_int_equal(th_twin_patch_desired(twins[i], desired[i], NOW, NULL, &err), TH_OK);
        assert_int_equal(th_twin_patch_reported(twins[i], reported[i], NOW + 1, &err), TH_OK);
    }
    size_t per = (heap_in_use() - before) / COUNT;
    print_message("# heap per twin (desired ~540 B, reported ~480 B): %zu B\n", per);

    for (int i = 0; i < COUNT; i++) {
        th_twin_free(twins[i]);
        cJSON_Delete(desired[i]);
        cJSON_Delete(reported[i]);
    }
    assert_in_range(per, 1, MAX_TWIN_BYTES);
}

static void test_registry_heap_per_identity_within_bound(void **state)
{
    (void)state;
    /* The registry document, as thb_write_registry writes it. */
    cJSON *doc = cJSON_CreateObject();
    cJSON *devices = cJSON_AddArrayToObject(doc, "devices");
    assert_non_null(devices);
    for (int i = 0; i < COUNT; i++) {
        char text[2048], desired[1024];
        desired_text(i, desired, sizeof desired);
        snprintf(text, sizeof text,
                 "{\"deviceId\":\"bd-%05d\",\"authentication\":{\"type\":\"sas\",\"symmetricKey\":"
                 "{\"primaryKey\":\"dHdpbmh1Yi1iZW5jaC1rZXktMDAwMDAtMDAwMDAwMDA=\","
                 "\"secondaryKey\":\"dHdpbmh1Yi1iZW5jaC1rZXktMDAwMDAtMDAwMDAwMDA=\"}},"
                 "\"tags\":{\"site\":\"bench\"},\"properties\":{\"desired\":%s}}",
                 i, desired);
        cJSON *dev = cJSON_Parse(text);
        assert_non_null(dev);
        cJSON_AddItemToArray(devices, dev);
    }
    cJSON *patches[COUNT];
    for (int i = 0; i < COUNT; i++)
        patches[i] = reported_patch(i);

    size_t before = heap_in_use();
    struct th_registry *reg = th_registry_new();
    assert_non_null(reg);
    struct th_error err = {0};
    assert_int_equal(th_registry_load(reg, doc, NOW, &err), TH_OK);
    size_t loaded = heap_in_use();
    for (int i = 0; i < COUNT; i++) {
        char id[16];
        snprintf(id, sizeof id, "bd-%05d", i);
        struct th_identity *dev = th_registry_find(reg, id, NULL);
        assert_non_null(dev);
        assert_int_equal(th_twin_patch_reported(dev->twin, patches[i], NOW + 1, &err), TH_OK);
    }
    size_t after = heap_in_use();
    size_t per = (after - before) / COUNT;
    print_message("# heap per identity: %zu B after loading, %zu B with the reported patch\n",
                  (loaded - before) / COUNT, per);

    th_registry_free(reg);
    for (int i = 0; i < COUNT; i++)
        cJSON_Delete(patches[i]);
    cJSON_Delete(doc);
    assert_in_range(per, 1, MAX_IDENTITY_BYTES);
}

int main(void)
{
    if (!heap_measurable()) {
        printf("1..0 # SKIP not measured: the heap is not glibc's (mallinfo2)\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_twin_heap_per_twin_within_bound),
        cmocka_unit_test(test_registry_heap_per_identity_within_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
