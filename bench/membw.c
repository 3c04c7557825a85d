/* Read bandwidth of this machine's memory with all cores, in GB/s: the
 * bound on token generation, which reads every weight once per token.
 * Built and run by bench/compare.py: cc -O3 -march=native -fopenmp. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    const size_t bytes = (size_t)1 << 30;
    const size_t count = bytes / sizeof(uint64_t);
    uint64_t *data = malloc(bytes);
    if (!data) return 1;
    memset(data, 1, bytes);
    double best = 1e30;
    uint64_t sink = 0;
    for (int repetition = 0; repetition < 5; repetition++) {
        double start = omp_get_wtime();
        uint64_t sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
        for (size_t i = 0; i < count; i++) sum += data[i];
        double elapsed = omp_get_wtime() - start;
        sink += sum;
        if (elapsed < best) best = elapsed;
    }
    printf("%.2f\n", (double)bytes / best / 1e9);
    free(data);
    return sink == 42 ? 2 : 0;
}
