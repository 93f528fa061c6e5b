"""The synthetic SDSS x APOGEE survey: it writes the files a user downloads from SDSS and
APOGEE (frames, a CasJobs-style cross-match table, an allStar-like label file), which the
real-data pipeline (:mod:`stellarexp.data`) then reads unchanged.

The flow, one module each: labels (:mod:`labels`), colours (:mod:`colours`), magnitudes
(:mod:`magnitudes`) and distances/dust (:mod:`galaxy`) make the labelled stars
(:mod:`population`) and their neighbours (:mod:`field_stars`); observing conditions
(:mod:`conditions`) and the PSF (:mod:`psf`) turn them into pixels (:mod:`render`), written as
frames (:mod:`frame_writer`) and measured into a catalogue (:mod:`photometry`,
:mod:`catalogues`); :mod:`simulate` orchestrates fields, :mod:`source` plugs the survey into the
dataset build, and :mod:`realism` measures the result against real stars.

The survey never imports :mod:`stellarexp.data` (and the reverse): what both need lives in
:mod:`stellarexp.sdss`.
"""
