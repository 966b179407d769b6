"""``pansynth serve``: a local web page to paint panoptic maps and watch the generator's image.

:mod:`.app` is the WSGI application (page, JSON API, validation), :mod:`.worker` the single
synthesis thread where the latest map wins, :mod:`.maps` the PNG decoding and checks,
:mod:`.classes` the palette, :mod:`.server` the start-up (check, listen, print the URL); the
command line (:mod:`pansynth.cli.serve`) loads the generator once and hands it over.
The page (``static/``) is plain HTML, CSS and JavaScript shipped with the package.
"""
