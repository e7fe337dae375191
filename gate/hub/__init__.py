"""The site hub: gates report their records to it, and it hands them site-wide orders.

The hub never decides for a door. Each gate keeps its own store and sends what it
wrote (`client`); the hub keeps a copy per gate (`ingest`), shows every door in one
panel (`panel`), and queues staff orders that each gate picks up (`orders`).
"""
