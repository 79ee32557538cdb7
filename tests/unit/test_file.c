/*
 * test_file.c - unit tests for emulator/ctl/th_file.c (whole-file reads,
 * write-then-rename) and emulator/ctl/hubinfo_file.c (the hub info file on
 * disk), in a temporary directory of their own.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "hubinfo_file.h"
#include "th_file.h"

static char dir[256];

static char *path_in(const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/test_file-XXXXXX", tmp && tmp[0] == '/' ? tmp : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- th_file_read ---- */

static void test_th_file_read_whole_file_succeeds(void **state)
{
    (void)state;
    char *p = path_in("a.txt");
    put(p, "hello\nworld\n");
    size_t len = 0;
    char *text = th_file_read(p, 100, &len);
    assert_non_null(text);
    assert_int_equal(len, 12);
    assert_string_equal(text, "hello\nworld\n");
    free(text);
    /* Exactly `max` bytes is still fine; len may be NULL. */
    text = th_file_read(p, 12, NULL);
    assert_string_equal(text, "hello\nworld\n");
    free(text);
    free(p);
}

static void test_th_file_read_empty_file_succeeds(void **state)
{
    (void)state;
    char *p = path_in("empty");
    put(p, "");
    size_t len = 7;
    char *text = th_file_read(p, 0, &len);
    assert_non_null(text);
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    free(text);
    free(p);
}

static void test_th_file_read_larger_than_first_chunk_succeeds(void **state)
{
    (void)state;
    char *p = path_in("big");
    char *big = malloc(100001);
    memset(big, 'x', 100000);
    big[100000] = '\0';
    put(p, big);
    size_t len = 0;
    char *text = th_file_read(p, 1 << 20, &len);
    assert_int_equal(len, 100000);
    assert_memory_equal(text, big, 100001);
    free(text);
    free(big);
    free(p);
}

static void test_th_file_read_proc_file_of_unknown_size_succeeds(void **state)
{
    (void)state;
    size_t len = 0;
    char *text = th_file_read("/proc/self/stat", 1 << 16, &len);
    assert_non_null(text);
    assert_true(len > 10);
    assert_non_null(strchr(text, ')'));
    free(text);
}

static void test_th_file_read_over_max_fails(void **state)
{
    (void)state;
    char *p = path_in("b.txt");
    put(p, "0123456789");
    errno = 0;
    assert_null(th_file_read(p, 9, NULL));
    assert_int_equal(errno, EFBIG);
    free(p);
}

static void test_th_file_read_missing_fails(void **state)
{
    (void)state;
    char *p = path_in("nope");
    errno = 0;
    assert_null(th_file_read(p, 100, NULL));
    assert_int_equal(errno, ENOENT);
    free(p);
}

static void test_th_file_read_directory_fails(void **state)
{
    (void)state;
    errno = 0;
    assert_null(th_file_read(dir, 100, NULL));
    assert_int_equal(errno, EISDIR);
}

static void test_th_file_read_fd_pipe_over_max_fails(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "abcdef", 6), 6);
    close(fds[1]);
    errno = 0;
    assert_null(th_file_read_fd(fds[0], 5, NULL));
    assert_int_equal(errno, EFBIG);
    close(fds[0]);
}

static void test_th_file_read_fd_pipe_succeeds(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "abc", 3), 3);
    close(fds[1]);
    size_t len = 0;
    char *text = th_file_read_fd(fds[0], 3, &len);
    assert_int_equal(len, 3);
    assert_string_equal(text, "abc");
    free(text);
    close(fds[0]);
}

/* ---- th_file_replace ---- */

static bool fail_fill(FILE *f, void *arg)
{
    (void)arg;
    fputs("half", f);
    errno = EPROTO;
    return false;
}

static void no_temporary_left(void)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/c.json.tmp.%ld", dir, (long)getpid()) > 0);
    assert_int_equal(access(p, F_OK), -1);
    free(p);
}

static void test_th_file_replace_bytes_new_and_existing_succeeds(void **state)
{
    (void)state;
    char *p = path_in("c.json");
    assert_int_equal(th_file_replace_bytes(p, 0600, "one", 3), TH_FILE_DONE);
    assert_int_equal(th_file_replace_bytes(p, 0600, "two!", 4), TH_FILE_DONE);
    char *text = th_file_read(p, 100, NULL);
    assert_string_equal(text, "two!");
    free(text);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0077, 0);
    no_temporary_left();
    free(p);
}

static void test_th_file_replace_fill_error_keeps_old_fails(void **state)
{
    (void)state;
    char *p = path_in("c.json");
    put(p, "old");
    errno = 0;
    assert_int_equal(th_file_replace(p, 0644, true, fail_fill, NULL), TH_FILE_FILL);
    assert_int_equal(errno, EPROTO);
    char *text = th_file_read(p, 100, NULL);
    assert_string_equal(text, "old");
    free(text);
    no_temporary_left();
    free(p);
}

static void test_th_file_replace_missing_directory_fails(void **state)
{
    (void)state;
    char *p = path_in("no/such/dir/x.json");
    errno = 0;
    assert_int_equal(th_file_replace_bytes(p, 0644, "x", 1), TH_FILE_CREATE);
    assert_int_equal(errno, ENOENT);
    free(p);
}

static void test_th_file_replace_name_too_long_fails(void **state)
{
    (void)state;
    char *p = malloc(5000);
    memset(p, 'a', 4999);
    p[0] = '/';
    p[4999] = '\0';
    errno = 0;
    assert_int_equal(th_file_replace_bytes(p, 0644, "x", 1), TH_FILE_NAME);
    assert_int_equal(errno, ENAMETOOLONG);
    free(p);
}

/* ---- the hub info file ---- */

static void test_th_hubinfo_save_then_load_succeeds(void **state)
{
    (void)state;
    char *p = path_in("hub.json");
    struct th_hubinfo in = {.mqtt_port = 1883, .mqtts_port = 18883, .pid = 77}, out;
    snprintf(in.hub_name, sizeof in.hub_name, "twinhub.localhost");
    snprintf(in.ca_file, sizeof in.ca_file, "/x/ca.pem");
    snprintf(in.service_cs, sizeof in.service_cs,
             "HostName=h;SharedAccessKeyName=p;SharedAccessKey=k");
    assert_true(th_hubinfo_save(p, 0600, &in));
    char *text = th_file_read(p, 1 << 16, NULL);
    assert_non_null(strstr(text, "\"hubName\":\t\"twinhub.localhost\""));
    assert_int_equal(text[strlen(text) - 1], '\n');
    free(text);
    char err[512];
    assert_int_equal(th_hubinfo_load(p, &out, err, sizeof err), TH_OK);
    assert_string_equal(out.hub_name, "twinhub.localhost");
    assert_int_equal(out.mqtts_port, 18883);
    assert_string_equal(out.service_cs, in.service_cs);
    assert_int_equal(out.pid, 77);
    free(p);
}

static void test_th_hubinfo_load_missing_fails(void **state)
{
    (void)state;
    char *p = path_in("absent.json");
    struct th_hubinfo out;
    char err[512];
    assert_int_equal(th_hubinfo_load(p, &out, err, sizeof err), TH_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "cannot read "));
    free(p);
}

static void test_th_hubinfo_load_not_json_fails(void **state)
{
    (void)state;
    char *p = path_in("broken.json");
    put(p, "{\"hubName\":");
    struct th_hubinfo out;
    char err[512];
    assert_int_equal(th_hubinfo_load(p, &out, err, sizeof err), TH_ERR_FORMAT);
    assert_non_null(strstr(err, "is not valid JSON"));
    free(p);
}

static void test_th_hubinfo_load_not_an_info_file_fails(void **state)
{
    (void)state;
    char *p = path_in("other.json");
    put(p, "{\"devices\":[]}");
    struct th_hubinfo out;
    char err[512];
    assert_int_equal(th_hubinfo_load(p, &out, err, sizeof err), TH_ERR_INVAL);
    assert_non_null(strstr(err, "is not a twinhub info file (no hubName or ports)"));
    free(p);
}

/* ---- finding the running hubs ---- */

/* An info file in `hubs` for a hub run by process `pid`. */
static void put_hub(const char *hubs, long pid, int mqtt_port)
{
    char path[512];
    assert_true(th_hubinfo_pid_path(hubs, pid, path, sizeof path));
    struct th_hubinfo in = {.mqtt_port = mqtt_port, .pid = pid};
    snprintf(in.hub_name, sizeof in.hub_name, "127.0.0.1");
    assert_true(th_hubinfo_save(path, 0600, &in));
}

/* A process id that is not running any more: a child that has exited and been reaped. */
static long dead_pid(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    return (long)pid;
}

static void test_th_hubinfo_find_live_hubs_succeeds(void **state)
{
    (void)state;
    char *hubs = path_in("hubs-live");
    assert_int_equal(mkdir(hubs, 0700), 0);
    put_hub(hubs, (long)getpid(), 21883);
    put_hub(hubs, (long)getppid(), 21884);
    char *tmp = NULL, *other = NULL; /* neither is a hub file */
    assert_true(asprintf(&tmp, "%s/%ld.json.tmp.1", hubs, (long)getpid()) > 0);
    assert_true(asprintf(&other, "%s/notes.json", hubs) > 0);
    put(tmp, "{}");
    put(other, "{}");
    struct th_hubinfo_entry found[4];
    assert_int_equal(th_hubinfo_find(hubs, found, 4), 2);
    int ports = found[0].info.mqtt_port + found[1].info.mqtt_port;
    assert_int_equal(ports, 21883 + 21884);
    assert_true(strcmp(found[0].path, found[1].path) < 0);
    /* More than fit are still counted. */
    assert_int_equal(th_hubinfo_find(hubs, found, 1), 2);
    assert_int_equal(th_hubinfo_find(hubs, NULL, 0), 2);
    free(tmp);
    free(other);
    free(hubs);
}

static void test_th_hubinfo_find_stale_file_removed_succeeds(void **state)
{
    (void)state;
    char *hubs = path_in("hubs-stale");
    assert_int_equal(mkdir(hubs, 0700), 0);
    long dead = dead_pid();
    put_hub(hubs, dead, 21885);
    char path[512];
    assert_true(th_hubinfo_pid_path(hubs, dead, path, sizeof path));
    struct th_hubinfo_entry found[2];
    assert_int_equal(th_hubinfo_find(hubs, found, 2), 0);
    assert_int_equal(access(path, F_OK), -1);
    free(hubs);
}

static void test_th_hubinfo_find_missing_dir_succeeds(void **state)
{
    (void)state;
    char *hubs = path_in("no-hubs-here");
    struct th_hubinfo_entry found[1];
    assert_int_equal(th_hubinfo_find(hubs, found, 1), 0);
    free(hubs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_file_read_whole_file_succeeds),
        cmocka_unit_test(test_th_file_read_empty_file_succeeds),
        cmocka_unit_test(test_th_file_read_larger_than_first_chunk_succeeds),
        cmocka_unit_test(test_th_file_read_proc_file_of_unknown_size_succeeds),
        cmocka_unit_test(test_th_file_read_over_max_fails),
        cmocka_unit_test(test_th_file_read_missing_fails),
        cmocka_unit_test(test_th_file_read_directory_fails),
        cmocka_unit_test(test_th_file_read_fd_pipe_over_max_fails),
        cmocka_unit_test(test_th_file_read_fd_pipe_succeeds),
        cmocka_unit_test(test_th_file_replace_bytes_new_and_existing_succeeds),
        cmocka_unit_test(test_th_file_replace_fill_error_keeps_old_fails),
        cmocka_unit_test(test_th_file_replace_missing_directory_fails),
        cmocka_unit_test(test_th_file_replace_name_too_long_fails),
        cmocka_unit_test(test_th_hubinfo_save_then_load_succeeds),
        cmocka_unit_test(test_th_hubinfo_load_missing_fails),
        cmocka_unit_test(test_th_hubinfo_load_not_json_fails),
        cmocka_unit_test(test_th_hubinfo_load_not_an_info_file_fails),
        cmocka_unit_test(test_th_hubinfo_find_live_hubs_succeeds),
        cmocka_unit_test(test_th_hubinfo_find_stale_file_removed_succeeds),
        cmocka_unit_test(test_th_hubinfo_find_missing_dir_succeeds),
    };
    return cmocka_run_group_tests_name("file", tests, setup, teardown);
}
