"""`gate soak`: the real gate process run for a long time under a seeded schedule of faults.

The soak plays every part around the gate: the camera (an MJPEG stream of
simulated visitors), the station (`gate station emulate` on a pty), the guard's
browser (live event streams and a poller), the database server (PostgreSQL of
its own, when asked) and a supervisor that restarts the gate as systemd would.
It samples the processes as it goes and checks the store against what the
station actually did. Nothing here runs at a door.
"""
