
Bfc.out_qJ(yh`rz…h¶’‰Á‚x€qmP^‚t?Ê’“~€oÂf”p[’W‹y