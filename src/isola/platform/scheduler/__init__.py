"""Placing instances on hosts: filters, then weighers (OpenStack Nova's shape).

`model` (the values), `filters`, `weighers`, `scheduler` (the reference: every filter on every host, with
reasons) and `index` (the same decisions on 10,000 hosts at thousands of placements per second).
"""
