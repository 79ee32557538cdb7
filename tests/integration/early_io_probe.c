/*
 * early_io_probe.c - a library for it_iolayer to have serve preload after the
 * shim (as TWINHUB_BROKER_MALLOC), standing in for an allocator whose
 * constructor reads a file before the shim's own constructor has run (mimalloc
 * 2.0 reads /proc/sys/vm/overcommit_memory that way): open, read and close
 * then reach the shim's interposers first (iolayer.c, EARLY_CALL), which must
 * pass them to the kernel. It also writes "early-io-probe: read N bytes" to
 * stderr, which serve copies into its log, so the test can see it ran.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void early_io_probe(void)
{
    char buf[64];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    if (fd >= 0)
        close(fd);
    char line[64];
    int len = snprintf(line, sizeof line, "early-io-probe: read %zd bytes\n", n);
    if (len > 0)
        (void)!write(STDERR_FILENO, line, (size_t)len);
}
