"""Make ``store-layout1.tar.gz``: a tiny embedded store written by clipdex's layout-1 code (main at 33f8e19,
before issue 18). Run it with THAT checkout on the path, not this one:

    cd /path/to/clipdex-33f8e19 && PYTHONPATH=$PWD python /path/to/make_store_layout1.py OUT_DIR
    tar -S -czf store-layout1.tar.gz -C OUT_DIR images vectors.npy

61 points of 16 dims: /lib/{2020,2021,2022}/{a,b}/img{i}.jpg (60, indexed with optimize) and
/lib/extra/x.jpg (one more, unindexed); ``vectors.npy`` holds the first 60 vectors (x.jpg is -vectors[0]).
"""

import sys
from pathlib import Path

import numpy as np

from ingest.bookkeeping import file_payload
from ingest.records import point_id
from ingest.scan import ScannedFile
from retrieval.store import CollectionMeta, IndexConfig
from retrieval.store.edge import EdgeStore

out = Path(sys.argv[1])
store = EdgeStore(out / "images", config=IndexConfig(index_threshold=10))
store.create(CollectionMeta("m", "", 16))
rng = np.random.default_rng(7)
vectors = rng.standard_normal((60, 16)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
files = [ScannedFile(f"/lib/{2020 + i % 3}/{'ab'[i % 2]}/img{i}.jpg", 1000 + i, 10**18 + i, "/lib") for i in range(60)]
payloads = [file_payload(f, f"h{i}", {"taken_ts": float(i), "camera_make": ["Canon", "Nikon", "Sony"][i % 3],
                                      "camera_model": f"M{i % 4}"}) for i, f in enumerate(files)]
store.upsert([point_id(f.path) for f in files], vectors, payloads)
store.optimize()
extra = ScannedFile("/lib/extra/x.jpg", 1, 1, "/lib")
store.upsert([point_id(extra.path)], -vectors[:1], [file_payload(extra, "hx", {})])
store.close()
np.save(out / "vectors.npy", vectors)
