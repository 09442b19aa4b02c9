"""What FaceCore keeps: `library` (the face library: groups, users, faces, their indexes, the
detected-face tokens), `keys` (API keys and access tokens), `backup` (backups and restores of a
data directory). Both stores sit on `kv.Store`, the storage interface; `rocks.RocksStore` (the
embedded RocksDB) is its implementation.
"""
