"""FaceCore's licensing (import name ``facecore_license``): hardware-bound licence files signed by
the vendor, and authd, the authorisation service that leases a licence's seats to face services.

- `fingerprint`: the machine's digest, from identifiers every user can read;
- `document`: the licence file, its Ed25519 signature and the vendor's key files;
- `protocol`: authd's HTTP+JSON protocol and its mutual authentication (a shared secret);
- `authd`: the service (`facecore license serve`, port 8301); `client`: a caller of it;
- `keeper`: the face service's leases, heartbeat and grace period;
- `cli`: the `facecore license` commands.

docs/license.md describes the procedure, the protocol and the timings.
"""

from __future__ import annotations
