/* A 32-bit program with a known syscall profile, for the compat-ABI test. Built by the test
 * with `gcc -m32 -static` (gcc-multilib), so no dynamic loader adds calls of its own.
 * usage: compat32 GETPPIDS EBADFS */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    long getppids = atol(argv[1]), ebadfs = atol(argv[2]);
    for (long i = 0; i < getppids; i++) syscall(SYS_getppid);
    for (long i = 0; i < ebadfs; i++) syscall(SYS_close, -1);
    return 0;
}
