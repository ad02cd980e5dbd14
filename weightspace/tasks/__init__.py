"""Deprecated import paths, kept for one release: each module here warns and re-exports the names it
held from the capability subpackage that now owns them.

=====================================  ======================================
old                                    new
=====================================  ======================================
``weightspace.tasks.predict``          :mod:`weightspace.predict`
``weightspace.tasks.nowcast*``         :mod:`weightspace.nowcast`
``weightspace.tasks.hyper*``           :mod:`weightspace.hyper`
``weightspace.tasks.diffusion*``       :mod:`weightspace.diffusion`
=====================================  ======================================
"""
