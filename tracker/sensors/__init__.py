"""Fitness sensors: BLE, ANT+, I2C and simulated sources of heart rate, cadence and power."""
