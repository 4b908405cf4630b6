// Drives the sketch on a PC: `harness ticks US...` prints sensor_ticks(micros64()) after setting
// micros() to each US (mod 2^32); `harness ride SECONDS PERIOD_US` runs loop() every 10 ms of
// simulated time with a crank event every PERIOD_US and prints the lines the sketch sends.
#include <stdlib.h>
#include "Arduino.h"

uint32_t fake_micros = 0;
FakeSerial Serial;

#include "ridesync_cadence.ino"

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "ticks") == 0) {
    for (int i = 2; i < argc; i++) {
      unsigned long long t = strtoull(argv[i], 0, 10);
      fake_micros = (uint32_t)t;
      uint64_t us = micros64();
      printf("%llu %u\n", (unsigned long long)us, (unsigned)sensor_ticks(us));
    }
    return 0;
  }
  if (argc == 4 && strcmp(argv[1], "ride") == 0) {
    unsigned long long end = strtoull(argv[2], 0, 10) * 1000000ULL;
    unsigned long long period = strtoull(argv[3], 0, 10);
    unsigned long long t = 0, next_crank = period;
    setup();
    for (; t <= end; t += 10000) {
      while (next_crank <= t) {
        fake_micros = (uint32_t)next_crank;
        on_crank();
        next_crank += period;
      }
      fake_micros = (uint32_t)t;
      loop();
    }
    return 0;
  }
  fprintf(stderr, "usage: harness ticks US... | harness ride SECONDS PERIOD_US\n");
  return 2;
}
