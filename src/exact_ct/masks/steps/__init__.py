"""The intensity backend's organ steps, one module each, in the order :mod:`exact_ct.masks.intensity` runs them.

body -> airway (tracked lumen), bronchi (continued into the hilum), airway_wall -> lungs -> bone -> spine
(column and vertebral front) -> mediastinum (the space between the lungs) -> heart -> aorta_contrast, or
aorta_plain with aorta_plain_fit -> esophagus (fitted) and esophagus_prior (fixed disc, neck) ->
aorta_abdominal (where the mediastinal search found no aorta) -> pleura. Shared pieces live one level up:
:mod:`exact_ct.masks.hu` (HU levels), :mod:`exact_ct.masks.morph` (morphology in mm),
:mod:`exact_ct.masks.rays` (section boundaries along rays) and :mod:`exact_ct.masks.tubes` (tube tracking).
"""
