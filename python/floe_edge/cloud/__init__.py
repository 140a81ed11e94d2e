"""The cloud side of Floe: the token-id wire protocol, `floe cloud serve`, and the device's cloud link."""
