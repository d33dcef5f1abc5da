"""hardware: WidowX 250 and Franka drivers, cameras and the real-robot runner, each a `robot.Robot`.

Nothing is imported here: a driver's SDK (dynamixel-sdk, franky, cv2, pyrealsense2) loads only when
its config's `make()` runs. Start at `hardware.registry.ROBOTS`.
"""
