B	gap.out_qJ@~
OA7¨%_}wV8<	U½i¯e*U>oE’
T­„V›(;O	XEd"$»ˆ