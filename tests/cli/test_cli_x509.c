/*
 * test_cli_x509.c - X.509 in the CLI against the real `twinhub serve`
 * (docs/cli.md): `device create --x509` issues a certificate from the
 * development CA and registers its thumbprint, `--x509-cert` and
 * `--x509-thumbprint` register one, `--x509-ca` needs no secret, and
 * `twinhub cert` uploads the development CA, verifies it with its key,
 * lists it, and keeps it across a restart with --state-dir.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "cli_harness.h"

static struct cli_hub hub;

static int setup(void **state)
{
    (void)state;
    cli_hub_start(&hub);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rc = cli_hub_stop(&hub);
    cli_hub_remove_dir(&hub);
    return rc == 0 ? 0 : -1;
}

static void test_device_create_x509_issues_certificate_succeeds(void **state)
{
    (void)state;
    struct cli_result r = CLI_RUN("device", "create", "x-issued", "--x509", hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "selfSigned", &r);
    cli_expect_in(r.out, "HostName=127.0.0.1;DeviceId=x-issued;x509=true", &r);
    cli_expect_in(r.out, "/devices/x-issued.pem", &r);
    cli_expect_not_in(r.out, "SharedAccessKey", &r);
    cli_result_free(&r);
    char cert[4096], key[4096];
    snprintf(cert, sizeof cert, "%s/devices/x-issued.pem", hub.cert_dir);
    snprintf(key, sizeof key, "%s/devices/x-issued.key", hub.cert_dir);
    struct stat st;
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* The same certificate registers another device by its file. */
    r = CLI_RUN("device", "create", "x-by-file", "--x509-cert", cert, "--json", hub.flag);
    cli_expect_code(&r, 0);
    cJSON *a = cli_json_of(&r);
    struct cli_result s = CLI_RUN("device", "show", "x-issued", "--json", hub.flag);
    cJSON *b = cli_json_of(&s);
    const cJSON *ta = cli_path(a, "authentication.x509Thumbprint.primaryThumbprint");
    const cJSON *tb = cli_path(b, "authentication.x509Thumbprint.primaryThumbprint");
    assert_true(cJSON_IsString(ta) && cJSON_IsString(tb));
    assert_string_equal(ta->valuestring, tb->valuestring);
    assert_int_equal(strlen(ta->valuestring), 64);
    cJSON_Delete(a);
    cJSON_Delete(b);
    cli_result_free(&r);
    cli_result_free(&s);
}

static void test_device_create_x509_bad_thumbprint_fails(void **state)
{
    (void)state;
    struct cli_result r =
        CLI_RUN("device", "create", "x-bad", "--x509-thumbprint", "not-hex", hub.flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "40 hex digits", &r);
    cli_result_free(&r);
    r = CLI_RUN("device", "create", "x-both", "--x509", "--x509-ca", hub.flag);
    cli_expect_code(&r, 2);
    cli_result_free(&r);
}

static void test_cert_upload_verify_and_ca_device_succeeds(void **state)
{
    (void)state;
    char ca[4096], ca_key[4096];
    snprintf(ca, sizeof ca, "%s/ca.pem", hub.cert_dir);
    snprintf(ca_key, sizeof ca_key, "%s/ca.key", hub.cert_dir);
    struct cli_result r = CLI_RUN("cert", "upload", "dev-root", ca, hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "verified       no", &r);
    cli_result_free(&r);
    r = CLI_RUN("cert", "verify", "dev-root", "--ca-key", ca_key, hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "verified       yes", &r);
    cli_result_free(&r);
    r = CLI_RUN("device", "create", "x-ca", "--x509-ca", "--json", hub.flag);
    cli_expect_code(&r, 0);
    cJSON *d = cli_json_of(&r);
    const cJSON *type = cli_path(d, "authentication.type");
    assert_true(cJSON_IsString(type));
    assert_string_equal(type->valuestring, "certificateAuthority");
    cJSON_Delete(d);
    cli_result_free(&r);
    /* A restart with the same --state-dir keeps the certificate verified. */
    cli_hub_stop(&hub);
    cli_hub_restart(&hub);
    r = CLI_RUN("cert", "list", hub.flag);
    cli_expect_code(&r, 0);
    cli_expect_in(r.out, "dev-root", &r);
    cli_expect_in(r.out, "yes", &r);
    cli_result_free(&r);
    r = CLI_RUN("cert", "delete", "dev-root", hub.flag);
    cli_expect_code(&r, 0);
    cli_result_free(&r);
    r = CLI_RUN("cert", "show", "dev-root", hub.flag);
    cli_expect_code(&r, 1);
    cli_expect_in(r.err, "does not exist", &r);
    cli_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_create_x509_issues_certificate_succeeds),
        cmocka_unit_test(test_device_create_x509_bad_thumbprint_fails),
        cmocka_unit_test(test_cert_upload_verify_and_ca_device_succeeds),
    };
    return cmocka_run_group_tests_name("cli_x509", tests, setup, teardown);
}
