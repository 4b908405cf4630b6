// Just enough of the Arduino API to build adapters/serial/firmware/ridesync_cadence on a PC, for
// tests/serial/test_firmware_ticks.py: micros() returns a clock the harness sets, Serial prints to stdout.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern uint32_t fake_micros;
inline uint32_t micros() { return fake_micros; }
inline uint32_t millis() { return fake_micros / 1000; }
#define INPUT_PULLUP 2
#define FALLING 2
inline void pinMode(int, int) {}
inline int digitalPinToInterrupt(int pin) { return pin; }
inline void attachInterrupt(int, void (*)(), int) {}
inline void noInterrupts() {}
inline void interrupts() {}
struct FakeSerial {
  void begin(long) {}
  void print(const char *s) { fputs(s, stdout); }
};
extern FakeSerial Serial;
