/*
 * x509_cli.h - X.509 helpers of the CLI (x509_cli.c): device certificates
 * from the development CA, a certificate file's thumbprint, and the
 * `twinhub cert` command.
 */
#ifndef TH_X509_CLI_H
#define TH_X509_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/*
 * Issue a client certificate with subject CN `device_id` (365 days, EC
 * P-256) from the development CA in `cert_dir` (ca.pem, ca.key), written to
 * <cert_dir>/devices/<id>.pem and .key (0600). Fills both paths and the
 * certificate's SHA-256 thumbprint (upper-case hex); false with a sentence in
 * err.
 */
bool th_x509_issue_device(const char *cert_dir, const char *device_id, char *cert_path,
                          char *key_path, size_t path_size, char sha256[65], char *err,
                          size_t errsize);

/* The SHA-256 thumbprint of the first certificate in a PEM file; false with err. */
bool th_x509_file_thumbprint(const char *path, char sha256[65], char *err, size_t errsize);

int th_cmd_cert(int argc, char **argv);
void th_usage_cert(FILE *out);

#endif
