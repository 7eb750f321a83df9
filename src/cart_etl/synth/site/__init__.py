"""The synthetic tianjin_ref site export: layouts, cell formatting, row builders and sinks.

``writer.SiteExportWriter`` writes the eleven files; one module per file family builds
their rows (``register``, ``flowsheet``, ``labs``, ``mar``, ``tables``), ``layouts`` and
``cells`` say how files and cells look, ``sinks`` writes the bytes.
"""
