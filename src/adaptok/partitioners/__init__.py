"""Partitioners: images -> `Partition`, behind one registry (`partition(images, method=...)`).

grid and quadtree (square tokens), dht (learned hierarchical superpixels), slic (the classic
superpixel baseline). Their modules load on first use so that `import adaptok` stays light.
"""

from .registry import available_methods, get_partitioner, partition, register_partitioner

__all__ = ["available_methods", "get_partitioner", "partition", "register_partitioner"]
